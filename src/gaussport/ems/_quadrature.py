"""The integrals of DPM-Solver-v3 over one step, from EMS given at nodes.

For a step from ``lam_a`` to ``lam_b`` (``lam = -log sigma``) with EMS ``l, s, b`` known at nodes
``lam_a = u_0 < u_1 < ... < u_n = lam_b`` and linear between them, DPM-Solver-v3 needs
(Zheng et al. 2023, eq. 9; docs/ems.md#the-solver-in-ve-coordinates and
docs/ems.md#step-integrals-and-quadrature)::

    L(u) = int_{lam_a}^u l,   S(u) = int_{lam_a}^u s,   E(u) = L(u) + S(u)
    J(u) = int_{lam_a}^u exp(-S(r)) b(r) dr                      (= B_{lam_a}(u) of the paper)
    decay = exp(-L(lam_b)),  s_gain = exp(S(lam_b)),  b_gain = J(lam_b)
    phi_k = int_{lam_a}^{lam_b} exp(E(u)) (u - lam_a)^k / k! du,   k = 0..degree
    bias  = int_{lam_a}^{lam_b} exp(E(u)) J(u) du

``L`` and ``S`` are integrals of piecewise-linear functions: the trapezoid rule gives them exactly
at the nodes. The exponential integrals are approximated cell by cell, with one of two rules:

* ``"trapezoid"`` -- the rule of the official implementation (``weighted_cumsumexp_trapezoid``):
  ``int_cell F e^a ~ w/2 (F_j e^{a_j} + F_{j+1} e^{a_{j+1}})``. Error O(w^2) relative.
* ``"exponential"`` -- the exponent ``a`` and the factor ``F`` linear in the cell, integrated
  exactly: ``int_0^w e^{a_j + z u / w} F(u) du = w e^{a_j} sum_m F_m psi_m(z)`` with
  ``psi_m(z) = int_0^1 t^m e^{z t} dt``. Also O(w^2) in general, but exact whenever ``l + s`` and
  ``s`` are constant -- in particular for the degenerate EMS ``l = 1, s = b = 0``, where
  DPM-Solver-v3 is exactly DPM-Solver++ with its exact phi-functions.

All exponentials are shifted by their maximum over the nodes (per dimension) before summation,
the max-shift of the official code, so no intermediate overflows. Everything runs in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["RULES", "psi", "psis", "step_integrals"]

RULES = ("exponential", "trapezoid")

# |z| below this: power series of psi_m (the closed-form recursion cancels there).
_SERIES_RADIUS = 0.5
_SERIES_TERMS = 20  # 0.5^20 / 20! ~ 4e-25


def psis(z: Tensor, m_max: int) -> list[Tensor]:
    """``[psi_0(z), ..., psi_m_max(z)]`` with ``psi_m(z) = int_0^1 t^m e^{z t} dt``, elementwise.

    ``|z| < 0.5``: the series ``sum_n z^n / (n! (n + m + 1))`` (its terms shared by every ``m``);
    otherwise the recursion ``psi_0 = expm1(z) / z``, ``psi_m = (e^z - m psi_{m-1}) / z``, which
    cancels for small ``|z|`` (at ``|z| = 0.5`` it loses < 3 digits for ``m <= 4``).
    """
    small = z.abs() < _SERIES_RADIUS
    zs = torch.where(small, z, torch.zeros_like(z))
    # Terms until radius^n / n! < 1e-17 (precomputation on the CPU: this sync is not in a step loop).
    radius = float(zs.abs().max()) if zs.numel() else 0.0
    terms, bound = 1, 1.0
    while bound > 1e-17 and terms < _SERIES_TERMS:
        bound *= radius / terms
        terms += 1
    # In place: these arrays have (cells x dimensions) entries, ~10^7 for latent-size data.
    term = torch.ones_like(z)
    series = [torch.full_like(z, 1.0 / (m + 1)) for m in range(m_max + 1)]
    for n in range(1, terms):
        term.mul_(zs).div_(n)
        for m, acc in enumerate(series):
            acc.add_(term, alpha=1.0 / (n + m + 1))
    zl = torch.where(small, torch.ones_like(z), z)
    exp_z = torch.exp(zl)
    closed = [torch.expm1(zl).div_(zl)]
    for k in range(1, m_max + 1):
        closed.append((exp_z - k * closed[-1]).div_(zl))
    return [torch.where(small, a, c) for a, c in zip(series, closed, strict=True)]


def psi(m: int, z: Tensor) -> Tensor:
    """``psi_m(z) = int_0^1 t^m e^{z t} dt`` elementwise (see :func:`psis`)."""
    return psis(z, m)[m]


def _integrate_linear(
    rule: str, w: Tensor, a: Tensor, f: Tensor, cumulative: bool, moments: list[Tensor] | None = None
) -> Tensor:
    """``int e^{a(u)} F(u) du`` over the cells, ``a`` and ``F`` given at the nodes ``[n+1, D]``.

    Returns the cumulative integral at every node ``[n+1, D]`` (first row 0) or the total ``[D]``.
    ``moments``: ``psis(a[1:] - a[:-1], 1)`` if already computed (exponential rule).
    """
    shift = a.max(dim=0, keepdim=True).values
    left = torch.exp(a[:-1] - shift)  # e^{a_j - shift}
    z = a[1:] - a[:-1]
    ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
    if rule == "trapezoid":
        cells = 0.5 * ww * (f[:-1] * left + f[1:] * torch.exp(a[1:] - shift))
    else:
        psi0, psi1 = (moments or psis(z, 1))[:2]
        cells = ww * left * (f[:-1] * psi0 + (f[1:] - f[:-1]) * psi1)
    scale = torch.exp(shift)
    if not cumulative:
        return cells.sum(0) * scale.squeeze(0)
    out = torch.cumsum(cells, dim=0) * scale
    return torch.cat([torch.zeros_like(out[:1]), out], dim=0)


def _integrate_monomials(
    rule: str, u: Tensor, a: Tensor, degree: int, moments: list[Tensor] | None = None
) -> list[Tensor]:
    """``phi_k = int e^{a(u)} (u - u_0)^k / k! du`` for ``k = 0..degree`` (totals ``[D]``).

    With ``c_j = u_j - u_0`` the offset of cell ``j``: ``(c_j + u')^k = sum_m C(k, m) c_j^{k-m} u'^m``,
    so each cell needs the moments ``int e^a u'^m du'`` -- exact for a linear exponent (exponential
    rule); the trapezoid rule evaluates ``(u - u_0)^k`` at the two nodes, like the official code.
    """
    w = u[1:] - u[:-1]
    shift = a.max(dim=0, keepdim=True).values
    left = torch.exp(a[:-1] - shift)
    view = (-1,) + (1,) * (a.ndim - 1)
    ww = w.reshape(view)
    c = (u[:-1] - u[0]).reshape(view)
    scale = torch.exp(shift.squeeze(0))
    if rule == "trapezoid":
        right = torch.exp(a[1:] - shift)
        cr = (u[1:] - u[0]).reshape(view)
        return [
            (0.5 * ww * (c**k * left + cr**k * right)).sum(0) * (scale / math.factorial(k))
            for k in range(degree + 1)
        ]
    # int_cell e^{a} u'^m du' = w^{m+1} e^{a_j} psi_m(z) for a linear exponent, z = a_{j+1} - a_j.
    moments = moments or psis(a[1:] - a[:-1], degree)
    out = []
    for k in range(degree + 1):
        acc = torch.zeros_like(left)
        for m in range(k + 1):
            acc = acc + math.comb(k, m) * c ** (k - m) * ww ** (m + 1) * moments[m]
        out.append((left * acc).sum(0) * (scale / math.factorial(k)))
    return out


def step_integrals(
    u: Tensor, l: Tensor, s: Tensor, b: Tensor, degree: int, rule: str
) -> dict[str, Tensor | list[Tensor]]:
    """The coefficients of one step (module docstring) from EMS at the nodes ``u`` (``[n+1]``, increasing).

    Args:
        u: the nodes in lambda, float64, ``u[0]`` the step's start, ``u[-1]`` its end.
        l, s, b: EMS values at the nodes, ``[n+1, *shape]`` float64.
        degree: highest ``k`` of ``phi_k`` (predictor/corrector order minus one).
        rule: ``"exponential"`` or ``"trapezoid"``.

    Returns:
        ``decay``, ``s_gain``, ``b_gain``, ``bias`` (tensors ``[*shape]``) and ``phi`` (a list of
        ``degree + 1`` tensors).
    """
    view = (-1,) + (1,) * (l.ndim - 1)
    w = (u[1:] - u[:-1]).reshape(view)
    zero = torch.zeros_like(l[:1])
    big_l = torch.cat([zero, torch.cumsum(0.5 * w * (l[1:] + l[:-1]), 0)])
    big_s = torch.cat([zero, torch.cumsum(0.5 * w * (s[1:] + s[:-1]), 0)])
    exponent = big_l + big_s
    cells = u[1:] - u[:-1]
    # The exponential rule's cell moments, computed once per exponent and shared.
    exact = rule == "exponential"
    mom_s = psis(big_s[:-1] - big_s[1:], 1) if exact else None
    mom_e = psis(exponent[1:] - exponent[:-1], max(degree, 1)) if exact else None
    j = _integrate_linear(rule, cells, -big_s, b, cumulative=True, moments=mom_s)  # J at every node
    return {
        "decay": torch.exp(-big_l[-1]),
        "s_gain": torch.exp(big_s[-1]),
        "b_gain": j[-1],
        "phi": _integrate_monomials(rule, u, exponent, degree, moments=mom_e),
        "bias": _integrate_linear(rule, cells, exponent, j, cumulative=False, moments=mom_e),
    }
