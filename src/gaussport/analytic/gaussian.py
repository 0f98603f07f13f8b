"""The Gaussian data model: an exact denoiser and the closed-form probability-flow map.

For data ``x0 ~ N(mu, Sigma)`` with ``Sigma = U diag(lam) U^T``, the noisy marginal at level sigma
is ``N(mu, Sigma + sigma^2 I)`` and (Wang & Vastola 2024; docs/warm-start.md#the-closed-form-flow):

* denoiser ``D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``
  (per direction: shrink by ``lam / (lam + sigma^2)``);
* PF-ODE flow from ``s0`` to ``s1``:
  ``x(s1) = mu + (Sigma + s1^2 I)^(1/2) (Sigma + s0^2 I)^(-1/2) (x(s0) - mu)``
  (per direction: scale by ``sqrt((lam + s1^2) / (lam + s0^2))``; zero-variance directions by
  ``s1 / s0``). It transports ``N(mu, Sigma + s0^2 I)`` exactly onto ``N(mu, Sigma + s1^2 I)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import as_int
from .._files import Array, read_npz, write_npz
from .covariance import (
    Covariance,
    Dense,
    Diagonal,
    LowRankPlusIsotropic,
    covariance_arrays,
    covariance_from_arrays,
    factor_dtype,
)

__all__ = ["Gaussian", "MomentAccumulator"]

FORMAT = "gaussport.gaussian"
FORMAT_VERSION = 1
_REPRESENTATIONS = ("dense", "diagonal", "lowrank")


class MomentAccumulator:
    """Streaming mean and covariance in float64, each batch centred on its own mean.

    Batches are merged with Chan et al.'s pairwise update
    ``M2 = M2_a + M2_b + delta delta^T n_a n_b / n`` -- never raw moments ``sum x x^T - n mu mu^T``,
    whose float32 cancellation produces negative eigenvalues
    (docs/warm-start.md#why-raw-moments-fail-in-float32).

    Args:
        full: accumulate the full ``d x d`` scatter matrix (else only the per-coordinate variances).
    """

    def __init__(self, full: bool = True) -> None:
        self.full = full
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.shape: tuple[int, ...] | None = None

    def update(self, batch: Tensor) -> None:
        """Add a batch of samples of shape ``[n, *sample_shape]``."""
        if not isinstance(batch, Tensor) or batch.ndim < 2 or batch.shape[0] == 0:
            raise ValueError("each batch must be a tensor of shape [n, *sample_shape] with n >= 1.")
        if self.shape is None:
            self.shape = tuple(batch.shape[1:])
        elif tuple(batch.shape[1:]) != self.shape:
            raise ValueError(
                f"batch sample shape {tuple(batch.shape[1:])} differs from earlier {self.shape}."
            )
        x = batch.detach().reshape(batch.shape[0], -1).to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the data contain NaN or infinite values.")
        n_b = x.shape[0]
        mean_b = x.mean(0)
        centred = x - mean_b
        m2_b = centred.T @ centred if self.full else (centred * centred).sum(0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        assert self.mean is not None and self.m2 is not None
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        outer = torch.outer(delta, delta) if self.full else delta * delta
        self.m2 = self.m2 + m2_b + outer * (n_a * n_b / n)
        self.mean = self.mean + delta * (n_b / n)
        self.count = n

    def covariance(self) -> Tensor:
        """The unbiased covariance (divided by ``n - 1``), float64, on the CPU."""
        if self.count < 2 or self.m2 is None:
            raise ValueError(f"a covariance needs at least 2 samples; got {self.count}.")
        return (self.m2 / (self.count - 1)).cpu()


def _as_cpu64(t: Any, what: str) -> Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a tensor; got {type(t).__name__}.")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{what} must be a real tensor; got dtype {t.dtype}.")
    # Always a copy: the value must not change when the caller's tensor does (docs/conventions.md).
    t = t.detach().to("cpu", torch.float64, copy=True)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values.")
    return t


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a string or None; got {type(value).__name__}.")
    return value


class Gaussian:
    """A Gaussian data model ``N(mu, Sigma)``: an exact denoiser and an exact PF-ODE flow map.

    Args:
        mean: the mean, a tensor of the sample shape (e.g. ``[C, H, W]``); flattened internally.
        cov: a dense ``[d, d]`` covariance matrix, or a :class:`~gaussport.analytic.Covariance`
            (:class:`Dense`, :class:`Diagonal`, :class:`LowRankPlusIsotropic`).
        n_samples: number of samples the statistics were estimated from (metadata).
        scale: a description of the data units, e.g. ``"[-1, 1]"`` (metadata; see :meth:`affine`).
        source: free-form provenance (metadata).

    The object is immutable: the tensors given are copied (a caller changing them later changes
    nothing), :attr:`mean` returns a copy, and integral NumPy or 0-d tensor ``n_samples`` become a
    Python ``int`` (other values are refused with a TypeError, so :meth:`save` cannot fail on them).
    It is a :class:`~gaussport.Denoiser` and a :class:`~gaussport.FlowMap`.
    """

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor | Covariance,
        *,
        n_samples: int | None = None,
        scale: str | None = None,
        source: str | None = None,
    ) -> None:
        mean64 = _as_cpu64(mean, "mean")
        if mean64.ndim == 0:
            raise ValueError("mean must have the sample shape (at least 1-D).")
        if isinstance(cov, Covariance):
            covariance = cov
        else:
            c = _as_cpu64(cov, "cov")
            if c.ndim == 1:
                raise ValueError(
                    "cov is 1-D; for a diagonal covariance pass gaussport.analytic.Diagonal(variances) "
                    "(Gaussian(mean, cov) takes a dense [d, d] matrix)."
                )
            covariance = Dense.from_matrix(c)
        if covariance.dim != mean64.numel():
            raise ValueError(
                f"the covariance is {covariance.dim}-dimensional but the mean has {mean64.numel()} "
                f"entries (shape {tuple(mean64.shape)})."
            )
        self._shape = tuple(mean64.shape)
        self._mean = mean64.reshape(-1)
        self._cov = covariance
        # Metadata is saved as JSON: integral NumPy/tensor counts become ints here, others are refused.
        self.n_samples = as_int(n_samples, "n_samples", minimum=1, allow_none=True)
        self.scale = _optional_text(scale, "scale")
        self.source = _optional_text(source, "source")
        self._mean_copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def diagonal(cls, mean: Tensor, variances: Tensor, **metadata: Any) -> Gaussian:
        """A Gaussian with independent coordinates (``variances`` of the sample shape or flat).

        ``metadata`` are the keywords ``n_samples``, ``scale`` and ``source`` of the constructor.
        """
        unknown = sorted(set(metadata) - {"n_samples", "scale", "source"})
        if unknown:
            raise TypeError(
                f"Gaussian.diagonal got unknown keyword(s) {unknown}; it takes n_samples, scale, source."
            )
        return cls(mean, Diagonal(_as_cpu64(variances, "variances").reshape(-1)), **metadata)

    @classmethod
    def low_rank(
        cls, mean: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, residual: float = 0.0, **metadata: Any
    ) -> Gaussian:
        """Top-``r`` eigenpairs (``eigenvectors`` of shape ``[d, r]``) plus a residual variance."""
        return cls(mean, LowRankPlusIsotropic(eigenvalues, eigenvectors, residual), **metadata)

    @classmethod
    def fit(
        cls,
        data: Tensor | Iterable[Tensor],
        *,
        representation: str = "dense",
        rank: int | None = None,
        batch_size: int = 4096,
        scale: str | None = None,
        source: str | None = None,
    ) -> Gaussian:
        """Fit mean and covariance to samples, in float64, centred (never raw moments).

        Args:
            data: a tensor ``[N, *sample_shape]`` or an iterable of such batches (streamed).
            representation: ``"dense"``, ``"diagonal"`` or ``"lowrank"`` (needs ``rank``; the
                residual is the mean discarded eigenvalue, keeping the trace).
            rank: number of eigenpairs kept by ``"lowrank"``.
            batch_size: chunk size when ``data`` is one tensor.
            scale: the data units, stored as metadata (e.g. ``"[-1, 1]"``).
            source: provenance, stored as metadata.

        The covariance is divided by ``N - 1``. ``"dense"`` and ``"lowrank"`` form the full
        ``d x d`` matrix (fine up to d ~ 20,000); beyond that, compute top eigenpairs elsewhere
        and use :meth:`low_rank`.

        Raises:
            TypeError: ``rank`` or ``batch_size`` is not an integer (a bool is not), ``scale`` or
                ``source`` is not a string, ``data`` is neither a tensor nor an iterable of them.
            ValueError: ``batch_size < 1``, an unknown ``representation``, ``rank`` missing for
                (or given without) ``"lowrank"`` or outside ``[0, d]``, or data that cannot be fitted.
        """
        if not isinstance(representation, str) or representation not in _REPRESENTATIONS:
            raise ValueError(f"representation must be one of {_REPRESENTATIONS}; got {representation!r}.")
        rank = as_int(rank, "rank", minimum=0, allow_none=True)
        if representation == "lowrank" and rank is None:
            raise ValueError("representation='lowrank' needs rank=, the number of eigenpairs to keep.")
        if representation != "lowrank" and rank is not None:
            raise ValueError(
                f"rank={rank} only applies to representation='lowrank'; "
                f"got representation={representation!r}."
            )
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        _optional_text(scale, "scale")
        _optional_text(source, "source")
        if isinstance(data, (str, bytes)) or not isinstance(data, (Tensor, Iterable)):
            raise TypeError(
                f"data must be a tensor [N, *sample_shape] or an iterable of such batches; got "
                f"{type(data).__name__}."
            )
        acc = MomentAccumulator(full=representation != "diagonal")
        batches = data.split(batch_size) if isinstance(data, Tensor) else data
        for batch in batches:
            acc.update(batch)
        if acc.mean is None or acc.shape is None:
            raise ValueError("no data to fit.")
        mean = acc.mean.cpu().reshape(acc.shape)
        meta = {"n_samples": acc.count, "scale": scale, "source": source}
        cov = acc.covariance()
        if representation == "diagonal":
            return cls(mean, Diagonal(cov), **meta)
        dense = Dense.from_matrix(cov)
        if representation == "lowrank":
            assert rank is not None
            return cls(mean, LowRankPlusIsotropic.from_dense(dense, rank), **meta)
        return cls(mean, dense, **meta)

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        """The sample shape."""
        return self._shape

    @property
    def dim(self) -> int:
        return self._mean.numel()

    @property
    def mean(self) -> Tensor:
        """The mean in the sample shape (float64, CPU); a copy, so the Gaussian stays immutable."""
        return self._mean.reshape(self._shape).clone()

    @property
    def cov(self) -> Covariance:
        return self._cov

    @property
    def representation(self) -> str:
        return self._cov.kind

    def __repr__(self) -> str:
        return (
            f"Gaussian(shape={self._shape}, representation={self.representation!r}, "
            f"n_samples={self.n_samples}, scale={self.scale!r})"
        )

    # ----------------------------------------------------------------- helpers
    def _flat(self, x: Tensor, what: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"{what} must be a floating-point tensor; got {getattr(x, 'dtype', type(x).__name__)}."
            )
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"{what} has sample shape {tuple(x.shape[1:])} but the Gaussian was fitted to samples of "
                f"shape {self._shape}; pass x of shape [B, {', '.join(map(str, self._shape))}]."
            )
        work = torch.promote_types(x.dtype, torch.float32)
        return x.reshape(x.shape[0], self.dim).to(work)  # not -1: ambiguous for a batch of 0

    def _mean_like(self, v: Tensor) -> Tensor:
        key = (v.device, v.dtype)
        if key not in self._mean_copies:
            self._mean_copies[key] = self._mean.to(device=v.device, dtype=v.dtype)
        return self._mean_copies[key]

    def _sigma2(self, sigma: Tensor | float, batch: int, like: Tensor) -> Tensor:
        # Python floats go straight to float64 (as_tensor alone would round them to float32 first).
        s = torch.as_tensor(sigma, dtype=factor_dtype(like.device), device=like.device)
        if s.ndim == 0:
            s = s.expand(batch)
        if s.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have shape [{batch}]; got {tuple(s.shape)}.")
        return (s * s).unsqueeze(-1)  # [B, 1], broadcast against eigenvalues [k]

    # ----------------------------------------------------------------- the model
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact denoiser ``E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        # lam / (lam + s2) is 0/0 for a zero-variance direction at sigma = 0: the projection gives 0.
        out = mu + self._cov.apply(v - mu, lambda lam: torch.nan_to_num(lam / (lam + s2), nan=0.0))
        return out.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x) = -(Sigma + sigma^2 I)^-1 (x - mu)``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        out = -self._cov.apply(v - mu, lambda lam: 1.0 / (lam + s2))
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log N(x; mu, Sigma + sigma^2 I)`` per sample, shape ``[B]``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        diff = v - mu
        maha = (diff * self._cov.apply(diff, lambda lam: 1.0 / (lam + s2))).sum(-1)
        logdet = self._cov.logdet(s2.squeeze(-1)).to(maha.dtype)
        return -0.5 * (self.dim * math.log(2 * math.pi) + logdet + maha)

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The exact PF-ODE map from ``sigma_from`` to ``sigma_to`` (either direction; 0 evaluations).

        ``x(s1) = mu + sqrt((Sigma + s1^2) / (Sigma + s0^2)) (x(s0) - mu)`` in the eigenbasis;
        zero-variance directions scale by ``s1 / s0`` (docs/warm-start.md#rank-deficient-covariances).

        Raises:
            ValueError: for negative sigmas, or ``sigma_from = 0 < sigma_to`` with a rank-deficient
                covariance (the map from sigma = 0 is not invertible there).
        """
        s0, s1 = float(sigma_from), float(sigma_to)
        if not (math.isfinite(s0) and math.isfinite(s1)) or s0 < 0 or s1 < 0:
            raise ValueError(f"flow needs finite noise levels >= 0; got sigma_from={s0}, sigma_to={s1}.")
        v = self._flat(x)
        if s0 == s1:
            return x.clone()
        if s0 == 0.0 and float(self._cov.spectrum()[-1]) == 0.0:
            raise ValueError(
                "cannot flow from sigma = 0 with a rank-deficient covariance: zero-variance directions "
                "carry no information at sigma = 0 (the map is not invertible)."
            )
        mu = self._mean_like(v)
        out = mu + self._cov.apply(v - mu, lambda lam: torch.sqrt((lam + s1 * s1) / (lam + s0 * s0)))
        return out.reshape(x.shape).to(x.dtype)

    def from_noise(self, z: Tensor, sigma: float) -> Tensor:
        """The teleport from pure noise: ``mu + (Sigma + sigma^2 I)^(1/2) z`` (VE state at ``sigma``).

        The limit of :meth:`flow` from a level ``s -> inf`` with ``x(s) = s z``: the state the
        probability-flow trajectory of the noise ``z`` reaches at ``sigma``. Rectified-flow models
        start at ``t = 1`` with ``x = z`` exactly (docs/warm-start.md#teleporting-from-pure-noise).

        Raises:
            ValueError: for a negative or non-finite ``sigma``, or ``z`` of the wrong sample shape.
        """
        s = float(sigma)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"the teleport target must be a finite noise level >= 0; got {sigma}.")
        v = self._flat(z, "the noise")
        out = self._mean_like(v) + self._cov.apply(v, lambda lam: torch.sqrt(lam + s * s))
        return out.reshape(z.shape).to(z.dtype)

    def sample(
        self,
        n: int,
        sigma: float = 0.0,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``n`` exact samples of the noisy marginal ``N(mu, Sigma + sigma^2 I)``, shape ``[n, *shape]``.

        Randomness comes only from ``generator`` (the global RNG if ``None``); samples are drawn on
        the generator's device unless ``device`` is given.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer; got {n!r}.")
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be finite and >= 0; got {sigma}.")
        if device is None:
            device = generator.device if generator is not None else "cpu"
        work = torch.promote_types(dtype, torch.float32)
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=work)
        out = self._mean_like(z) + self._cov.apply(z, lambda lam: torch.sqrt(lam + sigma * sigma))
        return out.reshape((n, *self._shape)).to(dtype)

    # ----------------------------------------------------------------- transformations
    def affine(self, scale: float, shift: float | Tensor = 0.0, *, units: str | None = None) -> Gaussian:
        """The law of ``scale * x + shift``: e.g. ``affine(2, -1, units="[-1, 1]")`` maps [0, 1] data.

        Eigenvectors are unchanged and eigenvalues scale by ``scale^2``: one explicit conversion instead
        of ``*2-1`` / ``*4`` at every call site (docs/warm-start.md#units).
        """
        a = float(scale)
        shift_t = torch.as_tensor(shift, dtype=torch.float64)
        mean = self.mean * a + shift_t
        cov = self._cov
        if isinstance(cov, Dense):
            new: Covariance = Dense(cov.eigenvalues * a * a, cov.eigenvectors)
        elif isinstance(cov, Diagonal):
            new = Diagonal(cov.variances * a * a)
        elif isinstance(cov, LowRankPlusIsotropic):
            new = LowRankPlusIsotropic(cov.eigenvalues * a * a, cov.eigenvectors, cov.residual * a * a)
        else:
            raise TypeError(f"affine does not support {type(cov).__name__}.")
        return Gaussian(mean, new, n_samples=self.n_samples, scale=units, source=self.source)

    def to_low_rank(self, rank: int) -> Gaussian:
        """The top-``rank`` eigenpairs plus the mean discarded eigenvalue as residual (from dense).

        Raises:
            TypeError: ``rank`` is not an integer, or the covariance is not dense.
            ValueError: ``rank`` is outside ``[0, d]``.
        """
        rank = as_int(rank, "rank", minimum=0)
        if not isinstance(self._cov, Dense):
            raise TypeError("to_low_rank needs a dense covariance.")
        return Gaussian(
            self.mean,
            LowRankPlusIsotropic.from_dense(self._cov, rank),
            n_samples=self.n_samples,
            scale=self.scale,
            source=self.source,
        )

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to an ``.npz`` file (no pickling) with their metadata."""
        metadata = {
            "shape": list(self._shape),
            "representation": self.representation,
            "n_samples": self.n_samples,
            "scale": self.scale,
            "source": self.source,
            "normalization": "n-1",
        }
        write_npz(path, FORMAT, FORMAT_VERSION, metadata, {"mean": self._mean.numpy(), **self._cov.arrays()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gaussian:
        """Read statistics written by :meth:`save`. Never unpickles.

        Raises:
            ValueError: if the file is not a gaussport statistics file or is inconsistent.
        """
        hint = (
            " (expected an .npz written by Gaussian.save); convert other statistics with "
            "Gaussian(mean, cov) and save them."
        )
        meta, arrays = read_npz(
            path,
            FORMAT,
            FORMAT_VERSION,
            what="statistics",
            hint=hint,
            fields={"shape": (list,), "representation": (str,)},
            arrays=lambda meta: {"mean": Array(ndim=1), **covariance_arrays(meta["representation"])},
        )
        try:
            mean = torch.from_numpy(arrays["mean"]).reshape(tuple(as_int(s, "shape") for s in meta["shape"]))
            cov = covariance_from_arrays(meta["representation"], arrays)
            return cls(
                mean,
                cov,
                n_samples=meta.get("n_samples"),
                scale=meta.get("scale"),
                source=meta.get("source"),
            )
        except (TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc
