"""Covariance representations with a spectral interface.

Every operation the Gaussian needs is a function of the covariance applied to a vector,
``f(Sigma) v`` (the denoiser uses ``f = lam / (lam + sigma^2)``, the flow
``f = sqrt((lam + s1^2) / (lam + s0^2))``, sampling ``f = sqrt(lam + sigma^2)``), plus
``log det(Sigma + s I)``. Three representations implement them:

* :class:`Dense` -- eigendecomposition ``U diag(lam) U^T`` (float64 ``eigh``, eigenvalues
  descending, round-off negatives clamped at 0 with a warning). Memory ``d^2``.
* :class:`Diagonal` -- independent coordinates. Memory ``d``.
* :class:`LowRankPlusIsotropic` -- top-``r`` eigenpairs plus one residual variance for the
  orthogonal complement (probabilistic PCA); a residual of 0 is a rank-``r`` covariance. Memory
  ``d r``; for high dimensions (docs/warm-start.md#low-rank-plus-isotropic-residual).

Spectral factors are computed in float64 from the float64 eigenvalues (on the vector's device;
float32 on devices without float64, e.g. MPS); matrix products run in the vector's dtype.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._checks import real_float64
from .._files import Array

__all__ = [
    "Covariance",
    "Dense",
    "Diagonal",
    "LowRankPlusIsotropic",
    "covariance_arrays",
    "covariance_from_arrays",
]

Factor = Callable[[Tensor], Tensor]

# Negative eigenvalues down to -NEGATIVE_RTOL * lam_max are treated as round-off and clamped.
NEGATIVE_RTOL = 1e-4


def factor_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (spectral factors decide accuracy at small sigma)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _clamp_spectrum(lam: Tensor, what: str) -> Tensor:
    """Clamp round-off negatives (with a warning); reject clearly negative eigenvalues."""
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"the {what} has non-finite eigenvalues; check the covariance for NaN/inf.")
    top = float(lam.max()) if lam.numel() else 0.0
    low = float(lam.min()) if lam.numel() else 0.0
    if low < 0.0:
        if low < -NEGATIVE_RTOL * max(top, 0.0):
            raise ValueError(
                f"the {what} is not positive semi-definite: smallest eigenvalue {low:.3g} against "
                f"largest {top:.3g}. A covariance estimate must be PSD; recompute it centred in float64 "
                "(gaussport.analytic.Gaussian.fit does)."
            )
        count = int((lam < 0).sum())
        warnings.warn(
            f"clamped {count} slightly negative eigenvalue(s) of the {what} (min {low:.3g}, largest "
            f"{top:.3g}) to 0; they are round-off of the covariance estimate.",
            stacklevel=3,
        )
        lam = lam.clamp_min(0.0)
    return lam


class Covariance(ABC):
    """A symmetric positive semi-definite ``d x d`` matrix with a spectral interface.

    Stored on the CPU in float64; device/dtype copies of large arrays are cached on first use.
    """

    kind: str  # the representation's name in files and reprs

    def __init__(self) -> None:
        self._copies: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    def _on(self, name: str, like: Tensor) -> Tensor:
        """``getattr(self, name)`` on ``like``'s device and dtype, copied once per device and dtype."""
        key = (name, like.device, like.dtype)
        if key not in self._copies:
            self._copies[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return self._copies[key]

    @property
    @abstractmethod
    def spectral_values(self) -> Tensor:
        """The float64 values the spectral factors are computed from (CPU)."""

    def _spectral_on(self, device: torch.device) -> Tensor:
        """:attr:`spectral_values` on ``device`` in the factor dtype, copied once per device."""
        key = ("spectral_values", device, factor_dtype(device))
        if key not in self._copies:
            self._copies[key] = self.spectral_values.to(device=device, dtype=key[2])
        return self._copies[key]

    @property
    @abstractmethod
    def dim(self) -> int:
        """The dimension ``d``."""

    @abstractmethod
    def spectrum(self) -> Tensor:
        """All ``d`` eigenvalues, descending, float64."""

    @abstractmethod
    def apply(self, v: Tensor, factor: Factor) -> Tensor:
        """``f(Sigma) v`` for ``v`` of shape ``[B, d]``.

        ``factor`` maps a float64 tensor of eigenvalues ``[k]`` to factors of shape ``[k]`` or
        ``[B, k]`` (per-sample factors, e.g. one sigma per row).
        """

    @abstractmethod
    def logdet(self, shift: Tensor) -> Tensor:
        """``log det(Sigma + shift I)`` for each entry of ``shift`` (float64, any shape)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The float64 arrays that define this covariance (for saving)."""

    def dense(self) -> Tensor:
        """The full ``d x d`` matrix in float64 (for tests and small problems)."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return self.apply(eye, lambda lam: lam)

    def spectral_weights(self) -> tuple[Tensor | None, Tensor]:
        """``(w, lam)`` with ``Sigma_dd' = sum_j U_dj lam_j U_d'j`` and ``w[d, j] = U_dj^2`` (float64, CPU).

        Each row of ``w`` sums to 1: the diagonal of ``f(Sigma)`` is ``w @ f(lam)``, which is what
        the analytic EMS of DPM-Solver-v3 need (docs/ems.md). ``w`` is ``None`` when it is the
        identity (a diagonal covariance: ``lam`` are then the per-dimension variances). This
        default goes through the dense matrix; representations override it.
        """
        dense = Dense.from_matrix(self.dense())
        return dense.eigenvectors**2, dense.eigenvalues

    def trace(self) -> float:
        return float(self.spectrum().sum())

    def _factors(self, factor: Factor, like: Tensor) -> Tensor:
        return factor(self._spectral_on(like.device)).to(like.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


class Dense(Covariance):
    """A full covariance as its eigendecomposition ``U diag(lam) U^T`` (eigenvalues descending).

    Args:
        eigenvalues: ``[d]``; clamped at 0 (round-off negatives, with a warning).
        eigenvectors: ``[d, d]`` orthonormal columns.
    """

    kind = "dense"

    def __init__(self, eigenvalues: Tensor, eigenvectors: Tensor) -> None:
        super().__init__()
        lam = real_float64(eigenvalues, "eigenvalues")
        u = real_float64(eigenvectors, "eigenvectors")
        if lam.ndim != 1 or u.shape != (lam.shape[0], lam.shape[0]):
            raise ValueError(
                "Dense needs eigenvalues [d] and eigenvectors [d, d]; "
                f"got {tuple(lam.shape)} and {tuple(u.shape)}."
            )
        order = torch.argsort(lam, descending=True)
        self.eigenvalues = _clamp_spectrum(lam[order], "covariance")
        self.eigenvectors = u[:, order].contiguous()

    @classmethod
    def from_matrix(cls, cov: Tensor) -> Dense:
        """Eigendecompose a covariance matrix in float64 after checking it is finite and symmetric."""
        c = torch.as_tensor(cov).detach().to("cpu", torch.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1]:
            raise ValueError(f"a covariance matrix must be square [d, d]; got shape {tuple(c.shape)}.")
        if not bool(torch.isfinite(c).all()):
            raise ValueError("the covariance matrix contains NaN or infinite values.")
        scale = float(c.abs().max()) if c.numel() else 0.0
        asym = float((c - c.T).abs().max()) if c.numel() else 0.0
        if asym > 1e-6 * max(scale, 1e-300):
            raise ValueError(
                f"the covariance matrix is not symmetric (max |C - C^T| = {asym:.3g} "
                f"for max |C| = {scale:.3g}); "
                "pass (C + C.T) / 2 if the asymmetry is round-off."
            )
        lam, u = torch.linalg.eigh((c + c.T) / 2)
        return cls(lam, u)

    @property
    def dim(self) -> int:
        return self.eigenvalues.shape[0]

    def spectrum(self) -> Tensor:
        return self.eigenvalues

    @property
    def spectral_values(self) -> Tensor:
        return self.eigenvalues

    def apply(self, v: Tensor, factor: Factor) -> Tensor:
        u = self._on("eigenvectors", v)
        return ((v @ u) * self._factors(factor, v)) @ u.T

    def logdet(self, shift: Tensor) -> Tensor:
        lam = self._spectral_on(shift.device).to(shift.dtype)
        return torch.log(lam + shift.unsqueeze(-1)).sum(-1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"eigenvalues": self.eigenvalues.numpy(), "eigenvectors": self.eigenvectors.numpy()}

    def spectral_weights(self) -> tuple[Tensor | None, Tensor]:
        return self.eigenvectors**2, self.eigenvalues


class Diagonal(Covariance):
    """A diagonal covariance ``diag(variances)``: independent coordinates."""

    kind = "diagonal"

    def __init__(self, variances: Tensor) -> None:
        super().__init__()
        var = real_float64(variances, "variances")
        if var.ndim != 1:
            raise ValueError(f"Diagonal needs a 1-D tensor of variances; got shape {tuple(var.shape)}.")
        self.variances = _clamp_spectrum(var, "diagonal covariance")

    @property
    def dim(self) -> int:
        return self.variances.shape[0]

    def spectrum(self) -> Tensor:
        return torch.sort(self.variances, descending=True).values

    @property
    def spectral_values(self) -> Tensor:
        return self.variances

    def apply(self, v: Tensor, factor: Factor) -> Tensor:
        return v * self._factors(factor, v)

    def logdet(self, shift: Tensor) -> Tensor:
        var = self._spectral_on(shift.device).to(shift.dtype)
        return torch.log(var + shift.unsqueeze(-1)).sum(-1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"variances": self.variances.numpy()}

    def spectral_weights(self) -> tuple[Tensor | None, Tensor]:
        return None, self.variances


class LowRankPlusIsotropic(Covariance):
    """``U diag(lam) U^T + residual (I - U U^T)``: top-``r`` eigenpairs and one residual variance.

    With ``residual = 0`` this is a rank-``r`` covariance (zero variance off ``span(U)``, which the
    flow contracts as ``sigma / sigma_from``, docs/warm-start.md#rank-deficient-covariances). The usual
    estimate of the residual
    is the mean of the discarded eigenvalues, ``(tr Sigma - sum lam) / (d - r)`` (probabilistic PCA).

    Args:
        eigenvalues: ``[r]``.
        eigenvectors: ``[d, r]`` with orthonormal columns.
        residual: variance in every direction orthogonal to the columns, >= 0.
    """

    kind = "lowrank"

    def __init__(self, eigenvalues: Tensor, eigenvectors: Tensor, residual: float = 0.0) -> None:
        super().__init__()
        lam = real_float64(eigenvalues, "eigenvalues")
        u = real_float64(eigenvectors, "eigenvectors")
        if lam.ndim != 1 or u.ndim != 2 or u.shape[1] != lam.shape[0] or u.shape[0] < u.shape[1]:
            raise ValueError(
                "LowRankPlusIsotropic needs eigenvalues [r] and eigenvectors [d, r] with r <= d; "
                f"got {tuple(lam.shape)} and {tuple(u.shape)}."
            )
        gram = u.T @ u
        if not torch.allclose(gram, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-6):
            raise ValueError(
                "the eigenvectors of a LowRankPlusIsotropic covariance must be orthonormal columns."
            )
        if isinstance(residual, bool) or not isinstance(residual, (int, float, np.number, Tensor)):
            raise TypeError(f"the residual variance must be a number; got {type(residual).__name__}.")
        residual = float(residual)
        if not math.isfinite(residual) or residual < 0.0:
            raise ValueError(f"the residual variance must be finite and >= 0; got {residual}.")
        order = torch.argsort(lam, descending=True)
        self.eigenvalues = _clamp_spectrum(lam[order], "low-rank covariance")
        # Already sorted (every fit): no second [d, r] copy.
        in_order = torch.equal(order, torch.arange(order.numel()))
        self.eigenvectors = u.contiguous() if in_order else u[:, order].contiguous()
        self.residual = residual

    @classmethod
    def from_dense(cls, dense: Dense, rank: int, *, residual: str | float = "mean") -> LowRankPlusIsotropic:
        """Keep the top ``rank`` eigenpairs; ``residual="mean"`` keeps the trace (PPCA), or a float."""
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise TypeError(f"rank must be an integer; got {rank!r} ({type(rank).__name__}).")
        if not 0 <= rank <= dense.dim:
            raise ValueError(f"rank must be in [0, {dense.dim}]; got {rank}.")
        lam = dense.eigenvalues
        if residual == "mean":
            rest = lam[rank:]
            value = float(rest.mean()) if rest.numel() else 0.0
        else:
            value = float(residual)
        return cls(lam[:rank], dense.eigenvectors[:, :rank], value)

    @property
    def dim(self) -> int:
        return self.eigenvectors.shape[0]

    @property
    def rank(self) -> int:
        return self.eigenvectors.shape[1]

    def spectrum(self) -> Tensor:
        # The kept eigenvalues are sorted: the residual block goes where it belongs, O(d), no sort.
        rest = torch.full((self.dim - self.rank,), self.residual, dtype=torch.float64)
        above = int((self.eigenvalues >= self.residual).sum())
        return torch.cat([self.eigenvalues[:above], rest, self.eigenvalues[above:]])

    @property
    def spectral_values(self) -> Tensor:
        """The eigenvalues followed by the residual variance (the last factor acts on the complement)."""
        return torch.cat([self.eigenvalues, torch.tensor([self.residual], dtype=torch.float64)])

    def apply(self, v: Tensor, factor: Factor) -> Tensor:
        """``f(Sigma) v = U ((f(lam) - f(res)) * (U^T v)) + f(res) v``: two ``[B, d] x [d, r]`` products.

        Order ``O(B d r)`` time and ``O(B (d + r))`` memory beyond the cached ``U``; nothing ``d x d``.
        """
        u = self._on("eigenvectors", v)
        values = self._factors(factor, v)
        rest = values[..., -1:]
        return torch.addmm(rest * v, (v @ u) * (values[..., :-1] - rest), u.T)

    def logdet(self, shift: Tensor) -> Tensor:
        values = self._spectral_on(shift.device).to(shift.dtype)
        inside = torch.log(values[:-1] + shift.unsqueeze(-1)).sum(-1)
        return inside + (self.dim - self.rank) * torch.log(values[-1] + shift)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "eigenvalues": self.eigenvalues.numpy(),
            "eigenvectors": self.eigenvectors.numpy(),
            "residual": np.array(self.residual, dtype=np.float64),
        }

    def spectral_weights(self) -> tuple[Tensor | None, Tensor]:
        """One extra column: the residual variance, weighted by ``1 - sum_j U_dj^2``."""
        u2 = self.eigenvectors**2
        rest = (1.0 - u2.sum(1, keepdim=True)).clamp_min(0.0)
        return torch.cat([u2, rest], dim=1), self.spectral_values


def covariance_arrays(kind: str, prefix: str = "") -> dict[str, Array]:
    """The arrays a file holds for a covariance of representation ``kind`` (for ``read_npz``).

    Raises:
        ValueError: ``kind`` is unknown.
    """
    lam = Array(ndim=1, nonnegative=True)
    if kind == "dense":
        return {prefix + "eigenvalues": lam, prefix + "eigenvectors": Array(ndim=2)}
    if kind == "diagonal":
        return {prefix + "variances": lam}
    if kind == "lowrank":
        return {
            prefix + "eigenvalues": lam,
            prefix + "eigenvectors": Array(ndim=2),
            prefix + "residual": Array(ndim=0, nonnegative=True),
        }
    raise ValueError(f"unknown covariance representation {kind!r}; expected dense, diagonal or lowrank")


def covariance_from_arrays(kind: str, arrays: dict[str, np.ndarray], prefix: str = "") -> Covariance:
    """Rebuild a covariance of representation ``kind`` from what :meth:`Covariance.arrays` wrote.

    ``prefix`` selects one covariance among several in one file (e.g. mixture components).

    Raises:
        KeyError: a needed array is missing.
        ValueError: ``kind`` is unknown or the arrays are inconsistent.
    """
    if kind == "dense":
        return Dense(
            torch.from_numpy(arrays[prefix + "eigenvalues"]),
            torch.from_numpy(arrays[prefix + "eigenvectors"]),
        )
    if kind == "diagonal":
        return Diagonal(torch.from_numpy(arrays[prefix + "variances"]))
    if kind == "lowrank":
        return LowRankPlusIsotropic(
            torch.from_numpy(arrays[prefix + "eigenvalues"]),
            torch.from_numpy(arrays[prefix + "eigenvectors"]),
            float(arrays[prefix + "residual"]),
        )
    raise ValueError(f"unknown covariance representation {kind!r}")
