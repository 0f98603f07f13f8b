"""Sample-quality and solver-accuracy metrics.

* :func:`trajectory_error` -- distance of solver samples to the *exact* endpoint of the
  probability-flow ODE from the same initial noise, where the exact endpoint is a high-accuracy
  :func:`gaussport.reference_solve` (RK4 in ``lambda = -log sigma``, float64) of the **same**
  denoiser. Model and reference share the model, so the difference is solver (and warm-start)
  error only: it isolates sampler error from model error, which sample-quality metrics mix.
* :func:`frechet_distance` -- the Frechet distance between Gaussians fitted to two feature sets
  (the formula behind FID, Heusel et al. 2017), in float64, with no SciPy at run time.
* :func:`frechet_over_seeds` -- a metric's mean and seed-to-seed spread over several sample draws.

The features a Frechet distance compares come from the caller (an Inception network for FID, a
small classifier of the caller's data); :func:`gaussport.digits.digits_frechet_distance` is the one
of the shipped digits model.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import _deprecation

__all__ = [
    "TrajectoryError",
    "trajectory_error",
    "frechet_distance",
    "feature_statistics",
    "FrechetSummary",
    "frechet_over_seeds",
]


# ---------------------------------------------------------------------- trajectory error
@dataclass(frozen=True)
class TrajectoryError:
    """Per-sample and summary distances between samples and their exact ODE endpoints.

    Attributes:
        per_sample: ``[B]`` float64, the RMS over coordinates of ``x - x_ref`` for each sample.
        mean: the mean of ``per_sample``.
        rms: the RMS over all samples and coordinates (``sqrt(mean(per_sample^2))``).
        max: the largest per-sample error.
    """

    per_sample: Tensor
    mean: float
    rms: float
    max: float

    def __str__(self) -> str:
        return (
            f"trajectory error (per-sample RMS): mean {self.mean:.4g}, rms {self.rms:.4g}, max {self.max:.4g}"
        )


def trajectory_error(x: Tensor, x_ref: Tensor) -> TrajectoryError:
    """How far samples ``x`` are from the exact ODE endpoints ``x_ref`` of the same initial noise.

    ``x_ref`` should be ``gaussport.reference_solve(denoiser, x_T, sigmas)`` for the denoiser and
    initial state ``x_T`` that produced ``x`` (with a warm start, ``x_T`` is the state *before*
    the teleport, so the warm start's approximation error is counted too). Because both sides use
    the same denoiser, the error is that of the solver, not of the model: a sampler that matched
    the ODE exactly would score 0 however poor the model.

    Args:
        x: samples ``[B, ...]``.
        x_ref: the exact endpoints, same shape.

    Returns:
        A :class:`TrajectoryError`; per sample ``sqrt(mean_j (x_j - x_ref_j)^2)``, computed in float64.
    """
    if not isinstance(x, Tensor) or not isinstance(x_ref, Tensor):
        raise TypeError("x and x_ref must be tensors.")
    if x.shape != x_ref.shape or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"x and x_ref must have the same shape [B, ...] with B >= 1; got "
            f"{tuple(x.shape)} and {tuple(x_ref.shape)}."
        )
    diff = x.detach().to("cpu", torch.float64) - x_ref.detach().to("cpu", torch.float64)
    diff = diff.reshape(x.shape[0], -1)
    per_sample = diff.square().mean(dim=1).sqrt()
    return TrajectoryError(
        per_sample,
        float(per_sample.mean()),
        float(per_sample.square().mean().sqrt()),
        float(per_sample.max()),
    )


# ---------------------------------------------------------------------- Frechet distance
def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` (divided by ``n - 1``) of ``[n, d]`` features."""
    f = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape [n, d] with n >= 2; got {tuple(f.shape)}.")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features contain NaN or infinite values.")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(m: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix via ``eigh`` (round-off negatives -> 0)."""
    lam, u = torch.linalg.eigh((m + m.T) / 2)
    return (u * lam.clamp_min(0.0).sqrt()) @ u.T


def frechet_distance(
    feats_a: Tensor | tuple[Tensor, Tensor], feats_b: Tensor | tuple[Tensor, Tensor]
) -> float:
    """The Frechet (2-Wasserstein) distance between the Gaussians fitted to two feature sets.

    ``d^2 = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})``
    (Dowson & Landau 1982; the FID of Heusel et al. 2017 uses it on Inception features). The
    symmetric form ``(S_a^{1/2} S_b S_a^{1/2})^{1/2}`` has the trace of ``(S_a S_b)^{1/2}`` and is
    computed with two symmetric eigendecompositions in float64 (no SciPy ``sqrtm``).

    Args:
        feats_a: an ``[n, d]`` feature set, or its precomputed ``(mean, covariance)`` pair
            (see :func:`feature_statistics`).
        feats_b: the other feature set (or pair), of the same dimension ``d``.

    Returns:
        ``d^2`` (the squared distance, as FID reports it), a float >= 0.
    """
    mu_a, s_a = feats_a if isinstance(feats_a, tuple) else feature_statistics(feats_a)
    mu_b, s_b = feats_b if isinstance(feats_b, tuple) else feature_statistics(feats_b)
    mu_a, s_a, mu_b, s_b = (torch.as_tensor(t).to("cpu", torch.float64) for t in (mu_a, s_a, mu_b, s_b))
    if mu_a.shape != mu_b.shape or s_a.shape != s_b.shape or s_a.shape != (mu_a.numel(), mu_a.numel()):
        raise ValueError(
            f"feature dimensions differ: means {tuple(mu_a.shape)} and {tuple(mu_b.shape)}, "
            f"covariances {tuple(s_a.shape)} and {tuple(s_b.shape)}."
        )
    root_a = _sqrt_psd(s_a)
    cross = torch.linalg.eigvalsh((root_a @ s_b @ root_a + (root_a @ s_b @ root_a).T) / 2)
    trace_cross = float(cross.clamp_min(0.0).sqrt().sum())
    mean_term = float((mu_a - mu_b).square().sum())
    value = mean_term + float(torch.trace(s_a) + torch.trace(s_b)) - 2.0 * trace_cross
    return max(value, 0.0)


@dataclass(frozen=True)
class FrechetSummary:
    """A Frechet distance over seeds: ``mean`` +- ``std`` (sample standard deviation) of ``values``."""

    values: tuple[float, ...]
    mean: float
    std: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} +- {self.std:.2g} (n={len(self.values)})"


def frechet_over_seeds(
    generate: Callable[[torch.Generator], Tensor],
    seeds: Iterable[int] = range(5),
    metric: Callable[[Tensor], float] | None = None,
) -> FrechetSummary:
    """Mean and spread of ``metric(generate(torch.Generator().manual_seed(seed)))`` over ``seeds``.

    ``generate`` draws its samples with the generator it receives (e.g. the initial noise of a
    sampler); the spread is the sampling noise of the metric at that sample size. ``metric`` maps
    samples to a number, e.g. ``lambda x: frechet_distance(features(x), reference_statistics)``;
    leaving it out (the digits metric, for one release) is deprecated.
    """
    if metric is None:
        _deprecation.warn(
            "frechet_over_seeds() without metric=", "metric=gaussport.digits.digits_frechet_distance"
        )
        metric = _digits_alias("digits_frechet_distance")
    values = tuple(float(metric(generate(torch.Generator().manual_seed(int(s))))) for s in seeds)
    if not values:
        raise ValueError("seeds is empty.")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return FrechetSummary(values, statistics.fmean(values), std)


def _digits_alias(name: str) -> Any:
    # The deprecated digits names (removed in 0.3) are the only edge from here to gaussport.digits.
    from .digits import frechet

    return getattr(frechet, name)


__getattr__ = _deprecation.module_aliases(
    __name__,
    {
        name: (f"gaussport.digits.{name}", lambda name=name: _digits_alias(name))
        for name in ("digits_features", "digits_frechet_distance")
    },
)
