"""Shared coefficient maths of the multistep solvers: phi functions and interpolation weights.

Everything here works on Python floats (no tensors, no host synchronisation) and is exact algebra
for the update rules in docs/devdocs-derivations.md:

* In ``lambda = -log sigma`` the PF-ODE is ``dx/dlambda = D - x`` and its exact solution over a step
  ``h = lambda_t - lambda_s > 0`` is the variation-of-constants formula

  ``x_t = e^{-h} x_s + sum_{k >= 0} h^{k+1} phi_{k+1}(-h) D^{(k)}(lambda_s)``,

  ``phi_k(z) = sum_{j >= 0} z^j / (j + k)!`` (so ``h phi_1(-h) = 1 - e^{-h} = -expm1(-h)``).
  Exponential multistep methods (DPM-Solver++, UniPC, DPM-Solver-v3 without statistics) replace the
  derivatives ``D^{(k)}`` by those of the polynomial through the denoised values at the other nodes.
* Adams-Bashforth methods in sigma (iPNDM) integrate the polynomial through earlier slopes:
  ``x_t = x_s + H d_s + sum_{k >= 1} H^{k+1} / (k+1)! d^{(k)}(sigma_s)`` with ``H = sigma_t - sigma_s``.

Both become one small linear system. With node offsets ``delta_j`` (from the expansion point, in
the integration variable) and values ``f_j``, the weights ``w`` of ``sum_j w_j (f_j - f_s)`` that
reproduce ``sum_{k=1}^{n} c_k f^{(k)}`` exactly for every polynomial of degree ``<= n`` solve the
Vandermonde system ``sum_j w_j delta_j^k / k! = c_k``, ``k = 1..n`` (one unknown per node).
This is the "divided differences" step of every reference written as one solve; UniPC's ``R rho = b``
system (wl-zhao/UniPC ``uni_pc.py``) is the same system in its own scaling.

References:
    Hochbruck & Ostermann, "Exponential integrators", Acta Numerica 19 (2010), §2.3 (phi functions)
    and §5 (exponential multistep methods); Lu et al., DPM-Solver++ (arXiv 2211.01095);
    Zhao et al., UniPC (arXiv 2302.04867).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

__all__ = [
    "phi",
    "exponential_moments",
    "polynomial_moments",
    "interpolation_weights",
    "exponential_step",
]


def phi(k: int, z: float) -> float:
    """``phi_k(z) = sum_{j >= 0} z^j / (j + k)!`` to full float64 precision for every real ``z``.

    ``phi_0 = e^z``, ``phi_1(z) = expm1(z) / z``, ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``. The
    recurrence cancels for ``|z|`` below about ``k`` (the references' ``expm1(-h) / h + 1``-style
    formulas lose ``k log10(1/h)`` digits for small steps ``h``), so there the series is summed; the
    recurrence is used for ``|z| >= max(1, k)``. Measured against 60-digit arithmetic: relative error
    below 1.2e-15 for ``k <= 6`` and ``|z| <= 60`` (tests/solvers/test_expint.py).
    """
    if k < 0:
        raise ValueError(f"phi_k needs k >= 0; got {k}.")
    if k == 0:
        return math.exp(z)
    if abs(z) < max(1.0, k):
        total, term, j = 0.0, 1.0 / math.factorial(k), 0
        while True:
            total += term
            j += 1
            term *= z / (j + k)
            if abs(term) <= 1e-17 * abs(total):
                return total + term
    value = math.expm1(z) / z
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def exponential_moments(h: float, n: int) -> list[float]:
    """``[h phi_{k+1}(-h) for k = 1..n]``: the exact weights of ``h^k D^{(k)}`` in a step of size h.

    In the scaled form used by :func:`interpolation_weights` (offsets in units of h), the step
    ``x_t = e^{-h} x_s - expm1(-h) D_s + sum_k c_k h^k D^{(k)}`` has ``c_k = h phi_{k+1}(-h)``.
    """
    return [h * phi(k + 1, -h) for k in range(1, n + 1)]


def polynomial_moments(step: float, n: int) -> list[float]:
    """``[step / (k+1)! for k = 1..n]``: the Adams-Bashforth weights of ``step^k f^{(k)}``.

    ``int_0^H f(s + tau) dtau = H f_s + sum_k H^{k+1} / (k+1)! f^{(k)}(s)``; with offsets in units
    of ``H`` (:func:`interpolation_weights`) the moment of ``H^k f^{(k)}`` is ``H / (k+1)!``.
    """
    return [step / math.factorial(k + 1) for k in range(1, n + 1)]


def interpolation_weights(offsets: Sequence[float], moments: Sequence[float]) -> list[float]:
    """Weights ``w`` with ``sum_j w_j offsets_j^k / k! = moments_k`` for ``k = 1..len(offsets)``.

    ``sum_j w_j (f_j - f_s)`` then equals ``sum_k moments_k f^{(k)}(s)`` for the interpolating
    polynomial of the values ``f_s, f_j`` (offsets measured from ``s``; pass them in units of the step
    so the system is well scaled). Gaussian elimination with partial pivoting on at most 4 unknowns.

    Raises:
        ValueError: if two nodes coincide or a node sits at the expansion point (singular system).
    """
    n = len(offsets)
    if len(moments) < n:
        raise ValueError(f"need {n} moments for {n} nodes; got {len(moments)}.")
    if n == 0:
        return []
    if any(o == 0.0 for o in offsets) or len(set(offsets)) != n:
        raise ValueError(
            f"interpolation nodes must be distinct and differ from the expansion point; got offsets "
            f"{list(offsets)}. A repeated noise level (h = 0) makes the multistep update undefined."
        )
    rows = [[o**k / math.factorial(k) for o in offsets] + [moments[k - 1]] for k in range(1, n + 1)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, n + 1):
                rows[r][c] -= factor * rows[col][c]
    weights = [0.0] * n
    for r in range(n - 1, -1, -1):
        acc = rows[r][n] - sum(rows[r][c] * weights[c] for c in range(r + 1, n))
        weights[r] = acc / rows[r][r]
    return weights


def exponential_step(
    x: Tensor,
    denoised: Tensor,
    sigma: float,
    sigma_next: float,
    nodes: list[tuple[float, Tensor]],
    moments: list[float],
) -> Tensor:
    """``(sigma_next / sigma) x - expm1(-h) D + sum_j w_j (D_j - D)`` for nodes ``(sigma_j, D_j)``.

    ``moments[k-1]`` is the weight of ``h^k D^{(k)}`` (exact: :func:`exponential_moments`).
    """
    h = math.log(sigma / sigma_next)
    offsets = [math.log(sigma / s) / h for s, _ in nodes]  # (lambda_j - lambda_s) / h
    weights = interpolation_weights(offsets, moments)
    out = x * (sigma_next / sigma) - denoised * math.expm1(-h)
    for w, (_, d_j) in zip(weights, nodes, strict=True):
        out = out + (d_j - denoised) * w
    return out
