"""The shared coefficient maths of the multistep solvers (phi functions, interpolation weights)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaussport.solvers._expint import exponential_moments, interpolation_weights, phi, polynomial_moments

mpmath = pytest.importorskip("mpmath")


def _phi_mp(k: int, z: float) -> float:
    """phi_k(z) = (e^z - sum_{j<k} z^j / j!) / z^k in arbitrary precision (independent of the float code).

    The subtraction cancels ~k log10(1/|z|) digits, so the working precision grows with them.
    """
    digits = 40 + int(k * max(0.0, -math.log10(abs(z)))) if z else 40
    with mpmath.workdps(digits):
        zm = mpmath.mpf(z)
        if zm == 0:
            return float(1 / mpmath.factorial(k))
        tail = mpmath.exp(zm) - sum(zm**j / mpmath.factorial(j) for j in range(k))
        return float(tail / zm**k)


@given(k=st.integers(0, 6), z=st.one_of(st.floats(-60.0, 60.0), st.floats(-1e-3, 1e-3), st.just(0.0)))
def test_phi_is_accurate_to_float64(k: int, z: float) -> None:
    # The references compute phi_3 as (phi_2 / h - 1/2) and lose ~3 log10(1/h) digits; we must not.
    exact = _phi_mp(k, z)
    assert math.isclose(phi(k, z), exact, rel_tol=4e-15, abs_tol=1e-300)


def test_phi_small_argument_beats_the_reference_recurrence() -> None:
    h = 1e-4
    naive = ((math.expm1(-h) / h + 1) / h - 0.5) / h  # dpm-solver's phi_3 form, divided back by h
    exact = -_phi_mp(3, -h)  # their phi_3 / h = -phi_3(-h)
    assert abs(naive - exact) / abs(exact) > 1e-9  # the reference form has lost half its digits ...
    assert math.isclose(-phi(3, -h), exact, rel_tol=1e-15)  # ... ours has not


def test_phi_rejects_negative_index() -> None:
    with pytest.raises(ValueError, match="k >= 0"):
        phi(-1, 0.5)


@given(
    offsets=st.lists(
        st.floats(-4.0, 4.0).filter(lambda o: abs(o) > 0.05), min_size=1, max_size=4, unique=True
    ).filter(lambda o: min(abs(a - b) for a in o for b in o if a != b) > 0.05 if len(o) > 1 else True),
    coeffs=st.lists(st.floats(-3.0, 3.0), min_size=5, max_size=5),
    h=st.floats(0.01, 5.0),
)
def test_weights_integrate_polynomials_exactly(offsets: list[float], coeffs: list[float], h: float) -> None:
    """sum_j w_j (f(o_j) - f(0)) = sum_k m_k f^(k)(0) for every polynomial f of degree <= len(offsets)."""
    n = len(offsets)
    moments = exponential_moments(h, n)
    weights = interpolation_weights(offsets, moments)

    def f(t: float) -> float:
        return sum(c * t**k for k, c in enumerate(coeffs[: n + 1]))

    lhs = sum(w * (f(o) - f(0.0)) for w, o in zip(weights, offsets, strict=True))
    rhs = sum(moments[k - 1] * math.factorial(k) * coeffs[k] for k in range(1, n + 1))  # f^(k)(0) = k! c_k
    scale = sum(abs(w) * abs(f(o) - f(0.0)) for w, o in zip(weights, offsets, strict=True)) + abs(rhs) + 1e-12
    assert abs(lhs - rhs) <= 1e-9 * scale


def test_exponential_moments_are_the_exact_step_integrals() -> None:
    # c_k = h phi_{k+1}(-h) = int_0^1 e^{-h(1-u)} (u h)^k / k! du / h^k * h: check by quadrature.
    h = 0.7
    for k, c in enumerate(exponential_moments(h, 3), start=1):
        integrand = lambda u, k=k: mpmath.exp(-h * (1 - u)) * u**k / mpmath.factorial(k)  # noqa: E731
        quad = float(mpmath.quad(integrand, [0, 1])) * h
        assert math.isclose(c, quad, rel_tol=1e-14)
    assert polynomial_moments(2.0, 3) == [2.0 / 2, 2.0 / 6, 2.0 / 24]


def test_weights_reject_coincident_nodes() -> None:
    with pytest.raises(ValueError, match="distinct"):
        interpolation_weights([-1.0, -1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="h = 0"):
        interpolation_weights([0.0], [0.1])
