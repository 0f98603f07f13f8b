"""The teleport-level helpers of gaussport.evaluation used by the digits benchmarks and docs/choosing.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussport.analytic import Diagonal, Gaussian
from gaussport.evaluation import safe_level, velocity_error


def _isotropic(mean: torch.Tensor, variance: float) -> Gaussian:
    return Gaussian(mean, Diagonal(torch.full((mean.numel(),), variance, dtype=torch.float64)))


def test_velocity_error_of_the_gaussian_itself_is_zero() -> None:
    g = _isotropic(torch.linspace(-1, 1, 16, dtype=torch.float64), 0.3)
    data = g.sample(8, 0.0, torch.Generator().manual_seed(0))
    errors = velocity_error(g, g, data, [0.5, 2.0, 80.0], model_dtype=torch.float64)
    assert errors == {0.5: 0.0, 2.0: 0.0, 80.0: 0.0}


@pytest.mark.parametrize("sigma", [0.5, 3.0, 40.0])
def test_velocity_error_of_a_shifted_mean_matches_the_closed_form(sigma: float) -> None:
    # Isotropic Gaussians N(m1, c I) and N(m2, c I): D_k(x) = m_k + c / (c + s^2) (x - m_k), so
    # D1 - D2 = (m1 - m2) s^2 / (c + s^2) and x - D1 = (x - m1) s^2 / (c + s^2). With every probe at
    # x0 = m1, x - m1 = s eps and the ratio is |m1 - m2| / (s |eps|), |eps| ~ sqrt(d) (d = 4096:
    # relative spread ~1 / sqrt(2 d) = 1.1 %).
    d, c = 4096, 0.25
    m1 = torch.zeros(d, dtype=torch.float64)
    delta = torch.full((d,), 0.01, dtype=torch.float64)
    model, warm = _isotropic(m1, c), _isotropic(m1 + delta, c)
    data = m1.expand(16, d).clone()
    errors = velocity_error(model, warm, data, [sigma], model_dtype=torch.float64)
    expected = float(delta.norm()) / (sigma * math.sqrt(d))
    assert errors[sigma] == pytest.approx(expected, rel=0.02)


def test_velocity_error_rejects_bad_input() -> None:
    g = _isotropic(torch.zeros(4, dtype=torch.float64), 1.0)
    data = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive finite"):
        velocity_error(g, g, data, [])
    with pytest.raises(ValueError, match="positive finite"):
        velocity_error(g, g, data, [1.0, 0.0])
    with pytest.raises(ValueError, match="repeats"):
        velocity_error(g, g, data, [1.0], repeats=0)


def test_safe_level_examples() -> None:
    assert safe_level({1.0: 0.1, 2.0: 0.01, 5.0: 2e-3, 10.0: 1e-3}) == 5.0
    # A dip below tau under a level that fails does not count: safety is from the level upwards.
    assert safe_level({1.0: 1e-4, 2.0: 0.1, 5.0: 1e-3, 10.0: 1e-3}) == 5.0
    assert safe_level({1.0: 0.1, 80.0: 0.05}) == math.inf
    assert safe_level({1.0: 0.1, 80.0: 0.05}, tau=0.2) == 1.0
    with pytest.raises(ValueError, match="empty"):
        safe_level({})


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.floats(0.01, 100.0, allow_nan=False), st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12
    ),
    st.floats(1e-4, 0.5),
)
def test_safe_level_is_the_lowest_level_with_every_higher_level_below_tau(
    errors: dict[float, float], tau: float
) -> None:
    safe = safe_level(errors, tau)
    above = [lv for lv in errors if lv >= safe]
    assert all(errors[lv] <= tau for lv in above)
    below = [lv for lv in errors if lv < safe]
    if below:  # the next level down fails, else the safe level would be lower
        assert errors[max(below)] > tau
    if math.isinf(safe):
        assert errors[max(errors)] > tau
