"""The exact EMS of Gaussian data, in closed form (derivation: docs/ems.md).

For ``x0 ~ N(mu, Sigma)`` with ``Sigma = U diag(lam) U^T``, in VE coordinates (EDM: ``alpha = 1``,
``lambda = -log sigma``), let ``c_j = lam_j + sigma^2``, ``p_j = sigma^2 / c_j`` and the weights
``w_dj = U_dj^2`` (each row sums to 1). With ``h = sum_j w_dj / c_j``,
``g1 = sum_j w_dj lam_j / c_j``, ``g2 = sum_j w_dj lam_j^2 / c_j``, ``H_n = sum_j w_dj lam_j^n / c_j^2``,
``m = Sigma_dd`` and ``C = m + sigma^2``, per dimension ``d``:

* ``l* = diag(sigma^2 (Sigma + sigma^2 I)^-1) = sigma^2 h``, and ``l*' = dl*/dlambda = -2 sigma^2 H_1``;
* ``f = sigma eps - l* x`` and ``f' = df/dlambda`` along the ODE are affine in ``x ~ N(mu, C)``, with
  ``E f = -l* mu``, ``E f' = -l*' mu``, ``Var f = l* V``, ``Cov(f, f') = sigma^2 Var_w(p) + l*' V``, where
  ``V = l* C - sigma^2 = (sigma^2 / C) (m^2 h - 2 m g1 + g2)`` and
  ``Var_w(p) = sum_j w_dj (p_j - l*)^2 = sigma^4 (g1^2 H_0 - 2 g1 h H_1 + h^2 H_2)``;
* ``s* = Cov(f, f') / Var f`` and ``b* = E f' - s* E f = mu (s* l* - l*')``.

A dimension whose basis vector lies in one eigenspace of ``Sigma`` (every diagonal covariance) has
``f`` deterministic, ``Var f = 0`` at every level; every ``s`` fits ``f'`` exactly there and we take
the minimum-norm solution ``s* = 0``, ``b* = -l*' mu`` -- the exact EMS of independent coordinates,
``l* = 1 / (1 + e^{2 lambda} s_d^2)``, ``s = 0``, ``b = -l*' mu`` (docs/ems.md#independent-coordinates).

The sums are written so that no large terms cancel: every difference is between quantities of
the size of ``Sigma``'s eigenvalues, not of ``sigma^2`` (which reaches 6400 at sigma = 80).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._statistics import EMS, _check_intervals

if TYPE_CHECKING:
    from ..analytic import Gaussian

__all__ = ["analytic_ems"]

# Var_w(lam) <= _DECOUPLED * Sigma_dd^2: the dimension is an eigen-direction (Var f = 0 at all levels).
_DECOUPLED = 1e-10
# Work sizes (float64 elements): a block of weight rows w = U∘U (~64 MB) and a chunk of the six
# level factors f(lam) / c (~32 MB). Nothing d x d is formed beyond the covariance itself: the
# output [N + 1, d] tables are filled block by block with one [6 n, k] x [k, rows] product each.
_ROWS_ELEMENTS = 2**23
_LEVEL_ELEMENTS = 2**22


def _diagonal_ems(variances: Tensor, mu: Tensor, sigma2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    c = variances[None, :] + sigma2[:, None]
    l = sigma2[:, None] / c
    dl = -2.0 * sigma2[:, None] * variances[None, :] / c**2
    return l, torch.zeros_like(l), -dl * mu[None, :]


def _weight_rows(cov: Any) -> tuple[Callable[[slice], Tensor] | None, Tensor]:
    """``(rows -> w[rows], lam)``: the spectral weights ``w = U∘U`` by blocks of rows (``None``: identity).

    A dense covariance's eigenvectors are squared block by block (its ``spectral_weights()`` would
    form all of ``U∘U``, one more d x d matrix); any other covariance gives its weights, which are
    small (``d x (r + 1)`` for low rank) or the identity (diagonal).
    """
    u = getattr(cov, "eigenvectors", None)
    lam = getattr(cov, "eigenvalues", None)
    square = isinstance(u, Tensor) and u.ndim == 2 and u.shape[0] == u.shape[1]
    if getattr(cov, "kind", None) == "dense" and square and isinstance(lam, Tensor):
        return (lambda rows: u[rows].to(torch.float64) ** 2), lam.to(torch.float64)
    w, lam = cov.spectral_weights()
    if w is None:
        return None, lam
    return (lambda rows: w[rows]), lam


def _level_factors(lam: Tensor, sigma2: Tensor) -> Tensor:
    """``[6 n, k]``: ``1/c, lam/c, lam^2/c, 1/c^2, lam/c^2, lam^2/c^2``, ``c = lam + sigma^2`` per level."""
    inv_c = 1.0 / (lam[None, :] + sigma2[:, None])
    inv_c2 = inv_c * inv_c
    return torch.cat([inv_c, lam * inv_c, lam * lam * inv_c, inv_c2, lam * inv_c2, lam * lam * inv_c2])


def _dense_block(
    sums: Tensor, m: Tensor, mu: Tensor, sigma2: Tensor, decoupled: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The formulas of the module docstring from the six weighted sums ``[6, n, rows]`` of a block."""
    h, g1, g2, h0, h1, h2 = sums
    s2 = sigma2[:, None]
    l = s2 * h
    dl = -2.0 * s2 * h1
    big_c = m[None, :] + s2
    v = (s2 / big_c) * (m * m * h - 2.0 * m * g1 + g2)
    var_p = s2 * s2 * (g1 * g1 * h0 - 2.0 * g1 * h * h1 + h * h * h2)
    var_f = l * v
    cov_ff = s2 * var_p + dl * v
    ok = ~decoupled[None, :] & (var_f > 0)
    s = torch.where(ok, cov_ff / torch.where(ok, var_f, torch.ones_like(var_f)), torch.zeros_like(var_f))
    b = mu[None, :] * (s * l - dl)
    return l, s, b


def _dense_ems(
    rows_of: Callable[[slice], Tensor], lam: Tensor, mu: Tensor, sigma2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``l, s, b`` ``[n_levels, d]`` from spectral weights (``k`` columns), in O(N d k) time.

    Memory beyond the covariance and the output: one block of weight rows and one chunk of level
    factors (``_ROWS_ELEMENTS``, ``_LEVEL_ELEMENTS``), whatever ``d``.
    """
    k = lam.numel()
    d, levels = mu.numel(), sigma2.numel()
    out = [torch.empty(levels, d, dtype=torch.float64) for _ in range(3)]
    block = max(1, _ROWS_ELEMENTS // k)
    chunk = max(1, _LEVEL_ELEMENTS // (6 * k))
    for start in range(0, d, block):
        rows = slice(start, min(d, start + block))
        w = rows_of(rows)  # [rows, k]
        m = w @ lam  # Sigma_dd
        spread = (lam[None, :] - m[:, None]).square_().mul_(w).sum(1)  # Var_w(lam), one temporary
        decoupled = spread <= _DECOUPLED * m * m
        for first in range(0, levels, chunk):
            part = slice(first, min(levels, first + chunk))
            factors = _level_factors(lam, sigma2[part])  # [6 n, k]
            sums = (factors @ w.T).reshape(6, -1, w.shape[0])
            for target, value in zip(
                out, _dense_block(sums, m, mu[rows], sigma2[part], decoupled), strict=True
            ):
                target[part, rows] = value
    return out[0], out[1], out[2]


def analytic_ems(gaussian: Gaussian, *, sigma_min: float, sigma_max: float, intervals: int = 1200) -> EMS:
    """The exact EMS ``l*, s*, b*`` of the Gaussian ``N(mu, Sigma)`` on a uniform lambda grid.

    Any covariance representation works: ``Diagonal`` in O(N d), ``Dense`` in O(N d^2),
    ``LowRankPlusIsotropic`` of rank ``r`` in O(N d r). The result is exact at every grid level
    (no sampling, no finite differences); ``samples`` is ``None`` and ``source`` ``"analytic"``.
    The covariance supplies its spectrum through ``cov.spectral_weights()``, so this package needs
    nothing else of :mod:`gaussport.analytic`.

    Args:
        gaussian: a :class:`gaussport.analytic.Gaussian` (e.g. the teleportation warm start).
        sigma_min: the noise-level range of the grid (levels ``sigma_max .. sigma_min``).
        sigma_max: the noise-level range of the grid (levels ``sigma_max .. sigma_min``).
        intervals: ``N``; the grid has ``N + 1`` levels uniform in ``lambda = -log sigma``.

    Raises:
        TypeError: if ``gaussian`` is not a gaussport Gaussian.
    """
    spectral = getattr(getattr(gaussian, "cov", None), "spectral_weights", None)
    if not (callable(spectral) and isinstance(getattr(gaussian, "mean", None), Tensor)):
        raise TypeError(
            f"analytic EMS need a gaussport.analytic.Gaussian; got {type(gaussian).__name__}. For a mixture, "
            "use mixture.moments(); for any other denoiser, estimate_ems()."
        )
    _check_intervals(intervals)
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}.")
    start = time.perf_counter()
    lam0, lam1 = -math.log(sigma_max), -math.log(sigma_min)
    lambdas = torch.tensor(
        [lam0 + j * (lam1 - lam0) / intervals for j in range(intervals)] + [lam1], dtype=torch.float64
    )
    sigma2 = torch.exp(-2.0 * lambdas)
    mu = gaussian.mean.reshape(-1).to(torch.float64)
    rows_of, lam = _weight_rows(gaussian.cov)
    if rows_of is None:
        l, s, b = _diagonal_ems(lam, mu, sigma2)
    else:
        l, s, b = _dense_ems(rows_of, lam.to(torch.float64), mu, sigma2)
    shape = (intervals + 1, *gaussian.shape)
    meta: dict[str, Any] = {"representation": gaussian.representation, "seconds": time.perf_counter() - start}
    if gaussian.source:
        meta["gaussian_source"] = gaussian.source
    return EMS._adopt(
        l.reshape(shape),
        s.reshape(shape),
        b.reshape(shape),
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        samples=None,
        source="analytic",
        metadata=meta,
    )
