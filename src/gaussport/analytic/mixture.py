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

__all__ = ["GaussianMixture", "anisotropic_mixture", "fit_class_mixture", "fit_kmeans_mixture", "kmeans"]


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

    def responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``P(component k | x)`` at noise level ``sigma``, ``[B, K]`` float64.

        ``exp(log pi_k + log N_k - logsumexp_j(log pi_j + log N_j))``: the log-sum-exp keeps it exact
        where every component's density underflows (far from all of them, or at small ``sigma``).
        """
        log_w = self.weights.to(device=x.device).log()
        logits = torch.stack([c.log_prob(x, sigma).double() for c in self.components], dim=-1) + log_w
        return torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))

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


# ---------------------------------------------------------------------- fitting from data
def _samples_cpu64(data: Tensor | np.ndarray, what: str) -> tuple[Tensor, tuple[int, ...]]:
    """``data`` as float64 ``[N, d]`` on the CPU (a copy) and its sample shape; checked."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, Tensor) or data.dtype == torch.bool or data.is_complex():
        raise TypeError(
            f"{what} takes real samples as a tensor or array [N, ...]; got {type(data).__name__}."
        )
    if data.ndim < 2 or data.shape[0] == 0 or math.prod(data.shape[1:]) == 0:
        raise ValueError(
            f"{what} needs samples of shape [N, *sample_shape] with N >= 1; got {tuple(data.shape)}."
        )
    flat = data.detach().reshape(data.shape[0], -1).to("cpu", torch.float64, copy=True)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{what}: the samples contain NaN or infinite values.")
    return flat, tuple(int(s) for s in data.shape[1:])


def _squared_distances(v: Tensor, centres: Tensor) -> Tensor:
    """``|v_n - c_k|^2``, ``[N, K]``, by one matmul (clamped: the expansion can round 0 below 0)."""
    d2 = (v * v).sum(-1, keepdim=True) - 2.0 * v @ centres.T + (centres * centres).sum(-1)
    return d2.clamp_min(0.0)


def kmeans(
    data: Tensor | np.ndarray,
    k: int,
    *,
    generator: torch.Generator | None = None,
    iterations: int = 300,
    restarts: int = 1,
) -> tuple[Tensor, Tensor]:
    """k-means (Lloyd's algorithm from a k-means++ start), float64 on the CPU.

    Order: ``O(N K d)`` per iteration (one matmul for the distances). k-means++ draws each new
    centre with probability proportional to the squared distance to the nearest chosen one; Lloyd's
    iterations run until no assignment changes (or ``iterations``). An empty cluster is re-seeded
    with the point farthest from its centre. Of ``restarts`` runs the one with the smallest
    within-cluster sum of squares is kept. Reference: Arthur & Vassilvitskii, "k-means++" (2007).

    Args:
        data: ``[N, *sample_shape]`` samples.
        k: number of clusters, ``1 <= k <= N``.
        generator: the only source of randomness (default: a fresh one seeded 0, so the result is
            reproducible and the global RNG is untouched).
        iterations: maximum Lloyd iterations per run.
        restarts: independent k-means++ starts.

    Returns:
        ``(centres [k, d] float64, labels [N] int64)``.
    """
    v, _ = _samples_cpu64(data, "kmeans")
    k = as_int(k, "k", minimum=1)
    iterations = as_int(iterations, "iterations", minimum=1)
    restarts = as_int(restarts, "restarts", minimum=1)
    if k > v.shape[0]:
        raise ValueError(f"kmeans: k = {k} clusters need at least k samples; got {v.shape[0]}.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    best: tuple[float, Tensor, Tensor] | None = None
    for _ in range(restarts):
        centres = _kmeans_plus_plus(v, k, gen)
        labels = torch.full((v.shape[0],), -1, dtype=torch.long)
        for _ in range(iterations):
            d2 = _squared_distances(v, centres)
            new = d2.argmin(-1)
            if torch.equal(new, labels):
                break
            labels = new
            counts = torch.bincount(labels, minlength=k)
            sums = torch.zeros_like(centres).index_add_(0, labels, v)
            own = d2.gather(1, labels[:, None]).squeeze(1)
            for j in (counts == 0).nonzero().flatten().tolist():  # empty: take the worst-fitted point
                movable = torch.where(counts[labels] > 1, own, -1.0)  # never empty another cluster
                far = int(movable.argmax())
                if float(movable[far]) < 0.0:
                    break
                old = int(labels[far])
                sums[old] -= v[far]
                counts[old] -= 1
                sums[j], counts[j] = v[far], 1
                labels[far], own[far] = j, -1.0  # never moved twice
            filled = (counts > 0)[:, None]  # a cluster still empty keeps its centre
            centres = torch.where(filled, sums / counts.clamp_min(1)[:, None].to(sums.dtype), centres)
        inertia = float(_squared_distances(v, centres).gather(1, labels[:, None]).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres, labels)
    assert best is not None
    return best[1], best[2]


def _kmeans_plus_plus(v: Tensor, k: int, gen: torch.Generator) -> Tensor:
    n = v.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [v[first]]
    closest = _squared_distances(v, v[first][None]).squeeze(1)
    for _ in range(1, k):
        total = float(closest.sum())
        if total > 0.0:
            pick = int(torch.multinomial(closest / total, 1, generator=gen))
        else:  # every point coincides with a centre: any point will do
            pick = int(torch.randint(n, (1,), generator=gen))
        centres.append(v[pick])
        closest = torch.minimum(closest, _squared_distances(v, v[pick][None]).squeeze(1))
    return torch.stack(centres)


def _clustered_mixture(
    v: Tensor,
    shape: tuple[int, ...],
    labels: Tensor,
    k: int,
    prior_count: float,
    floor: float,
    source: str,
) -> GaussianMixture:
    """One Gaussian per cluster label ``0..k-1``, weights = cluster frequencies (empty clusters dropped).

    Covariance of cluster ``j`` with ``n_j`` members and scatter ``S_j = sum (x - mu_j)(x - mu_j)^T``:
    ``(S_j + c P) / (n_j - 1 + c) + f (tr P / d) I`` with ``P`` the pooled within-cluster
    covariance ``sum_j S_j / (N - K)``, ``c = prior_count`` and ``f = floor``
    (docs/mixture-teleport.md#fitting-a-mixture).
    """
    prior_count = float(prior_count)
    floor = float(floor)
    if not (math.isfinite(prior_count) and prior_count >= 0.0):
        raise ValueError(f"prior_count must be a finite number >= 0; got {prior_count}.")
    if not (math.isfinite(floor) and floor >= 0.0):
        raise ValueError(f"floor must be a finite number >= 0; got {floor}.")
    n, d = v.shape
    means, scatters, counts = [], [], []
    for j in range(k):
        members = v[labels == j]
        if members.shape[0] == 0:
            continue
        mu = members.mean(0)
        diff = members - mu
        means.append(mu)
        scatters.append(diff.T @ diff)
        counts.append(members.shape[0])
    kept = len(counts)
    if n > kept:
        pooled = sum(scatters) / (n - kept)
    else:  # every cluster a singleton: no within-cluster spread to pool; use the data's covariance
        diff = v - v.mean(0)
        pooled = diff.T @ diff / max(n - 1, 1)
    isotropic = floor * float(torch.trace(pooled)) / d * torch.eye(d, dtype=torch.float64)
    comps = []
    for mu, scatter, count in zip(means, scatters, counts, strict=True):
        denom = count - 1 + prior_count
        cov = (scatter + prior_count * pooled) / denom if denom > 0 else pooled.clone()
        cov = (cov + cov.T) / 2 + isotropic
        comps.append(Gaussian(mu.reshape(shape), Dense.from_matrix(cov), n_samples=count, source=source))
    return GaussianMixture(comps, torch.tensor(counts, dtype=torch.float64))


def fit_class_mixture(
    data: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    *,
    prior_count: float = 0.0,
    floor: float = 0.0,
) -> GaussianMixture:
    """One Gaussian per class label, weighted by the class frequencies.

    Component order follows the sorted labels (component ``j`` is the ``j``-th smallest label).
    With the defaults each covariance is the class's unbiased sample covariance (as
    :func:`gaussport.digits.load_digits_class_gaussians`); ``prior_count`` and ``floor`` shrink it
    as in :func:`fit_kmeans_mixture`. Order: ``O(N d^2 + K d^3)``.

    Raises:
        ValueError: labels that are not one integer per sample.
    """
    v, shape = _samples_cpu64(data, "fit_class_mixture")
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).reshape(-1)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex() or y.shape[0] != v.shape[0]:
        raise ValueError(
            f"fit_class_mixture needs one integer label per sample ({v.shape[0]}); "
            f"got dtype {y.dtype}, {y.shape[0]} labels."
        )
    classes, index = torch.unique(y.cpu(), sorted=True, return_inverse=True)
    return _clustered_mixture(v, shape, index, len(classes), prior_count, floor, "fit_class_mixture")


def fit_kmeans_mixture(
    data: Tensor | np.ndarray,
    k: int,
    *,
    generator: torch.Generator | None = None,
    restarts: int = 1,
    iterations: int = 300,
    prior_count: float = 1.0,
    floor: float = 1e-4,
) -> GaussianMixture:
    """A Gaussian per k-means cluster (:func:`kmeans`), weighted by the cluster sizes.

    A cluster's covariance is shrunk towards the pooled within-cluster covariance ``P`` with
    ``prior_count`` pseudo-samples, and ``floor * tr(P) / d`` is added to every eigenvalue: a
    cluster of one sample gets ``P`` (plus the floor) instead of a zero covariance, and no component
    is so narrow that its responsibilities jump from 0 to 1 across a sliver of space.
    Order: ``O(iterations N K d + N d^2 + K d^3)``.
    """
    v, shape = _samples_cpu64(data, "fit_kmeans_mixture")
    _, labels = kmeans(v, k, generator=generator, iterations=iterations, restarts=restarts)
    return _clustered_mixture(v, shape, labels, int(k), prior_count, floor, f"fit_kmeans_mixture(k={k})")
