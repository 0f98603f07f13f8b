"""Gaussian mixtures: exact denoisers with no closed-form flow.

For ``p0 = sum_k pi_k N(mu_k, Sigma_k)`` the noisy marginal is ``sum_k pi_k N(mu_k, Sigma_k + sigma^2 I)``
and the posterior mean is ``D(x, sigma) = sum_k w_k(x, sigma) D_k(x, sigma)`` with responsibilities
``w_k = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))``. Their PF-ODE has no closed form;
its exact endpoint comes from a high-accuracy solve (:func:`gaussport.reference.reference_solve`). The
maths: docs/warm-start.md#mixtures-and-the-far-field.

A mixture is saved to and loaded from an ``.npz`` file with the conventions of
:meth:`Gaussian.save` / :meth:`Gaussian.load`: a format tag, JSON metadata, float64 arrays, and
``np.load(allow_pickle=False)`` (never unpickles).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .._checks import as_int, real_float64
from .._files import Array, read_npz, write_npz
from .covariance import (
    Dense,
    LowRankPlusIsotropic,
    covariance_arrays,
    covariance_from_arrays,
    factor_dtype,
)
from .gaussian import Gaussian

FORMAT = "gaussport.gaussian_mixture"
FORMAT_VERSION = 1

__all__ = ["GaussianMixture", "anisotropic_mixture"]


def same_shape_gaussians(gaussians: Sequence[Gaussian], what: str) -> tuple[Gaussian, ...]:
    """The Gaussians as a tuple, checked: at least one, each a :class:`Gaussian`, one sample shape.

    ``what`` names the owner in the errors (e.g. ``"a GaussianMixture"``, ``"component"``).
    """
    if isinstance(gaussians, (Gaussian, str, bytes)) or not isinstance(gaussians, Iterable):
        raise TypeError(f"{what} takes a sequence of gaussport Gaussians; got {type(gaussians).__name__}.")
    comps = tuple(gaussians)
    if not comps:
        raise ValueError(f"{what} needs at least one Gaussian.")
    for k, g in enumerate(comps):
        if not isinstance(g, Gaussian):
            raise TypeError(f"{what}: item {k} is a {type(g).__name__}, not a gaussport Gaussian.")
    shape = comps[0].shape
    for k, g in enumerate(comps):
        if g.shape != shape:
            raise ValueError(f"{what}: item {k} has sample shape {g.shape}; item 0 has {shape}.")
    return comps


class GaussianMixture:
    """A mixture of :class:`Gaussian` components of one sample shape; an exact denoiser.

    Args:
        components: the component Gaussians.
        weights: mixture weights (normalised here); uniform if ``None``.
    """

    def __init__(
        self, components: Sequence[Gaussian], weights: Tensor | Sequence[float] | None = None
    ) -> None:
        comps = same_shape_gaussians(components, "a GaussianMixture")
        shape = comps[0].shape
        if weights is None:
            w = torch.ones(len(comps), dtype=torch.float64)
        else:  # non-finite weights are named with the count below
            w = real_float64(weights, "weights", finite=False)
        if w.shape != (len(comps),) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
            raise ValueError(f"weights must be {len(comps)} positive finite numbers; got {w.tolist()}.")
        self.components = comps
        self.weights = w / w.sum()
        self._shape = shape
        self._stacked = _Stacked.build(comps)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dim(self) -> int:
        return self.components[0].dim

    def __len__(self) -> int:
        return len(self.components)

    def __repr__(self) -> str:
        return f"GaussianMixture(components={len(self)}, shape={self._shape})"

    def _responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        log_w = self.weights.to(device=x.device).log()
        logits = torch.stack([c.log_prob(x, sigma).to(log_w.dtype) for c in self.components], dim=-1)
        return torch.softmax(logits + log_w, dim=-1)  # [B, K], float64 on x's device

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact posterior mean ``sum_k w_k(x, sigma) D_k(x, sigma)``."""
        if self._stacked is not None:
            return self._stacked.denoise(self, x, sigma)
        work = torch.promote_types(x.dtype, torch.float32)
        resp = self._responsibilities(x, sigma).to(work)
        out = torch.zeros_like(x, dtype=work)
        view = (x.shape[0],) + (1,) * (x.ndim - 1)
        for k, c in enumerate(self.components):
            out = out + resp[:, k].reshape(view) * c(x, sigma).to(work)
        return out.to(x.dtype)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(x)`` per sample, shape ``[B]``."""
        logits = torch.stack([c.log_prob(x, sigma).double() for c in self.components], dim=-1)
        return torch.logsumexp(logits + self.weights.to(x.device).log(), dim=-1)

    def moments(self) -> Gaussian:
        """The moment-matched Gaussian.

        ``mu = sum pi_k mu_k`` and ``Sigma = sum pi_k (Sigma_k + mu_k mu_k^T) - mu mu^T``.

        This is the Gaussian a fit to infinitely many mixture samples converges to, so it is the
        warm start for mixture targets.
        """
        means = torch.stack([c.mean.reshape(-1) for c in self.components])  # [K, d]
        mu = (self.weights[:, None] * means).sum(0)
        cov = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        for w, c, m in zip(self.weights, self.components, means, strict=True):
            cov += w * (c.cov.dense() + torch.outer(m - mu, m - mu))
        return Gaussian(mu.reshape(self._shape), Dense.from_matrix(cov), source="GaussianMixture.moments")

    def sample(
        self,
        n: int,
        sigma: float = 0.0,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``n`` exact samples of the noisy marginal at ``sigma``; randomness only from ``generator``."""
        if device is None:
            device = generator.device if generator is not None else "cpu"
        labels = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        out = torch.empty((n, *self._shape), dtype=dtype, device=device)
        for k, c in enumerate(self.components):
            idx = (labels == k).nonzero().flatten()
            if idx.numel():
                out[idx] = c.sample(int(idx.numel()), sigma, generator, device=device, dtype=dtype)
        return out

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the weights and every component to an ``.npz`` file (no pickling).

        Component ``k``'s arrays are stored under ``c{k}_mean`` and ``c{k}_<array>`` (the arrays of
        its covariance representation, as in :meth:`Gaussian.save`); its metadata (representation,
        ``n_samples``, ``scale``, ``source``) goes into the JSON metadata. Component order is kept.
        """
        components = [
            {
                "representation": c.representation,
                "n_samples": c.n_samples,
                "scale": c.scale,
                "source": c.source,
            }
            for c in self.components
        ]
        metadata = {
            "shape": list(self._shape),
            "n_components": len(self),
            "components": components,
            "normalization": "n-1",
        }
        arrays: dict[str, np.ndarray] = {"weights": self.weights.numpy()}
        for k, c in enumerate(self.components):
            arrays[f"c{k}_mean"] = c.mean.reshape(-1).numpy()
            for name, value in c.cov.arrays().items():
                arrays[f"c{k}_{name}"] = value
        write_npz(path, FORMAT, FORMAT_VERSION, metadata, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GaussianMixture:
        """Read a mixture written by :meth:`save`. Never unpickles.

        Raises:
            ValueError: if the file is not a gaussport mixture file or is inconsistent.
        """
        name = repr(os.fspath(path))
        hint = (
            " (expected an .npz written by GaussianMixture.save; single Gaussians are read with "
            "Gaussian.load)."
        )

        def expected(meta: dict) -> dict[str, Array]:
            entries = meta["components"]
            if meta["n_components"] != len(entries) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("n_components disagrees with the component list")
            spec = {"weights": Array(ndim=1, nonnegative=True)}
            for k, entry in enumerate(entries):
                spec[f"c{k}_mean"] = Array(ndim=1)
                spec.update(covariance_arrays(entry["representation"], prefix=f"c{k}_"))
            return spec

        meta, arrays = read_npz(
            path,
            FORMAT,
            FORMAT_VERSION,
            what="Gaussian-mixture",
            hint=hint,
            fields={"shape": (list,), "components": (list,), "n_components": (int,)},
            arrays=expected,
        )
        entries = meta["components"]
        try:
            shape = tuple(as_int(s, "shape") for s in meta["shape"])
            components = []
            for k, entry in enumerate(entries):
                cov = covariance_from_arrays(entry["representation"], arrays, prefix=f"c{k}_")
                mean = torch.from_numpy(arrays[f"c{k}_mean"]).reshape(shape)
                components.append(
                    Gaussian(
                        mean,
                        cov,
                        n_samples=entry.get("n_samples"),
                        scale=entry.get("scale"),
                        source=entry.get("source"),
                    )
                )
            return cls(components, torch.from_numpy(arrays["weights"]))
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{name} is inconsistent: {exc}") from exc


class _Stacked:
    """All components' parameters stacked, for one batched evaluation of the denoiser.

    Applies when every component is :class:`Dense` or every one is :class:`LowRankPlusIsotropic` of
    one rank (a dense covariance is the rank-``d`` case with no residual). Same formulas as the
    per-component path, without a Python loop over components.
    """

    def __init__(self, means: Tensor, lam: Tensor, basis: Tensor, residual: Tensor) -> None:
        self.means, self.lam, self.basis, self.residual = (
            means,
            lam,
            basis,
            residual,
        )  # [K,d] [K,r] [K,d,r] [K]
        self._copies: dict[tuple[torch.device, torch.dtype | None], tuple[Tensor, ...]] = {}

    @classmethod
    def build(cls, comps: tuple[Gaussian, ...]) -> _Stacked | None:
        covs = [c.cov for c in comps]
        if all(isinstance(c, Dense) for c in covs):
            residual = torch.zeros(len(comps), dtype=torch.float64)
        elif all(isinstance(c, LowRankPlusIsotropic) for c in covs) and len({c.rank for c in covs}) == 1:
            residual = torch.tensor([c.residual for c in covs], dtype=torch.float64)
        else:
            return None
        means = torch.stack([c.mean.reshape(-1) for c in comps])
        lam = torch.stack([c.eigenvalues for c in covs])  # type: ignore[attr-defined]
        basis = torch.stack([c.eigenvectors for c in covs])  # type: ignore[attr-defined]
        return cls(means, lam, basis, residual)

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._copies:
            self._copies[key] = (
                self.means.to(like.device, like.dtype),
                self.basis.to(like.device, like.dtype),
            )
        return self._copies[key]

    def _spectra_on(self, device: torch.device, log_weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eigenvalues, residuals and log-weights in the factor dtype, copied once per device."""
        key = (device, None)
        if key not in self._copies:
            fdt = factor_dtype(device)
            self._copies[key] = (
                self.lam.to(device, fdt)[None],
                self.residual.to(device, fdt)[None, :, None],
                log_weights.to(device, fdt),
            )  # type: ignore[assignment]
        return self._copies[key]  # type: ignore[return-value]

    def denoise(self, mixture: GaussianMixture, x: Tensor, sigma: Tensor) -> Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        v = x.reshape(x.shape[0], mixture.dim).to(work)  # not -1: ambiguous for a batch of 0
        means, basis = self._on(v)
        fdt = factor_dtype(v.device)
        s = torch.as_tensor(sigma, dtype=fdt, device=v.device).expand(v.shape[0])[:, None, None]  # [B,1,1]
        s2 = s * s
        lam, res, log_w = self._spectra_on(v.device, mixture.weights.log())  # [1,K,r] [1,K,1] [K]
        diff = v[:, None, :] - means[None]  # [B,K,d]
        coeffs = torch.einsum("bkd,kdr->bkr", diff, basis)  # [B,K,r]
        d, r = diff.shape[-1], lam.shape[-1]
        maha = (coeffs.to(fdt) ** 2 / (lam + s2)).sum(-1)  # [B,K]
        logdet = torch.log(lam + s2).sum(-1)
        perp = diff - torch.einsum("bkr,kdr->bkd", coeffs, basis) if r < d else None
        if perp is not None:
            maha = maha + (perp.to(fdt) ** 2).sum(-1) / (res + s2)[..., 0]
            logdet = logdet + (d - r) * torch.log(res + s2)[..., 0]
        resp = torch.softmax(log_w - 0.5 * (logdet + maha), dim=-1).to(work)  # [B,K]
        shrunk = coeffs * (lam / (lam + s2)).to(work)
        out = torch.einsum("bk,kd->bd", resp, means) + torch.einsum(
            "bkr,kdr->bd", resp[..., None] * shrunk, basis
        )
        if perp is not None:
            out = out + torch.einsum("bk,bkd->bd", resp * (res / (res + s2))[..., 0].to(work), perp)
        return out.reshape(x.shape).to(x.dtype)


def anisotropic_mixture(
    dim: int = 16,
    n_components: int = 4,
    *,
    rank: int | None = None,
    spread: float = 1.0,
    eigenvalue_range: tuple[float, float] = (1e-3, 0.3),
    seed: int = 0,
) -> GaussianMixture:
    """A reproducible anisotropic Gaussian-mixture target (the built-in demo and benchmark problem).

    Component means have i.i.d. ``N(0, (spread / 2)^2)`` coordinates; each covariance has a random
    orthonormal basis and eigenvalues log-spaced over ``eigenvalue_range``. With ``rank`` set,
    components are :class:`LowRankPlusIsotropic` (``rank`` explicit directions, the rest at the
    smallest eigenvalue), which keeps ``dim >= 1024`` problems cheap.

    Args:
        dim: data dimension.
        n_components: number of components (equal weights perturbed reproducibly).
        rank: number of explicit eigen-directions per component (``None``: dense, full rank).
        spread: scale of the component means.
        eigenvalue_range: smallest and largest component eigenvalue.
        seed: seed of the private generator (the global RNG is untouched).
    """
    if dim < 1 or n_components < 1:
        raise ValueError("dim and n_components must be positive.")
    gen = torch.Generator().manual_seed(seed)
    lo, hi = eigenvalue_range
    if not 0 < lo <= hi:
        raise ValueError(f"eigenvalue_range must satisfy 0 < low <= high; got {eigenvalue_range}.")
    k = dim if rank is None else min(rank, dim)
    comps = []
    for _ in range(n_components):
        mean = 0.5 * spread * torch.randn(dim, generator=gen, dtype=torch.float64)
        basis, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
        lam = torch.exp(torch.linspace(math.log(hi), math.log(lo), k, dtype=torch.float64))
        if rank is None:
            comps.append(Gaussian(mean, Dense(lam, basis)))
        else:
            comps.append(Gaussian(mean, LowRankPlusIsotropic(lam, basis, residual=lo)))
    weights = 1.0 + 0.5 * torch.rand(n_components, generator=gen, dtype=torch.float64)
    return GaussianMixture(comps, weights)
