"""MixtureFlow: a mixture's PF-ODE integrated numerically, checked against closed forms and itself."""

from __future__ import annotations

import math

import pytest
import torch

import gaussport
from gaussport.analytic import EmpiricalMixture, Gaussian, GaussianMixture, MixtureFlow, anisotropic_mixture
from gaussport.reference import reference_solve
from gaussport.testing import random_gaussian


def _noise(n: int, dim: int, seed: int, scale: float = 80.0) -> torch.Tensor:
    return scale * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("sigma_to", [20.0, 2.0, 0.5, 0.02])
def test_one_component_mixture_reproduces_the_closed_form_gaussian_flow(sigma_to: float) -> None:
    # Eigenvalues from 1 down to 1e-4 (one direction nearly degenerate) and a non-zero mean.
    g = random_gaussian([1.0, 0.3, 0.05, 1e-4], seed=3)
    flow = MixtureFlow(GaussianMixture([g]))
    x = _noise(6, 4, 0)
    got, exact = flow.flow(x, 80.0, sigma_to), g.flow(x, 80.0, sigma_to)
    assert float((got - exact).norm(dim=-1).max() / exact.norm(dim=-1).min()) < 2e-7
    assert flow.last_evaluations >= 6 * flow.last_steps > 0


def test_reverse_then_forward_round_trip_returns_the_state() -> None:
    mix = anisotropic_mixture(dim=6, n_components=3, seed=1)
    flow = MixtureFlow(mix, rtol=1e-8, atol=1e-10)
    x = _noise(5, 6, 1)
    down = flow.flow(x, 80.0, 0.3)
    back = flow.flow(down, 0.3, 80.0)
    assert float((back - x).norm() / x.norm()) < 1e-7
    assert float((down - x).norm() / x.norm()) > 0.5  # the map moved the state


def test_adaptive_and_fixed_step_integrators_agree_on_a_mixture() -> None:
    mix = anisotropic_mixture(dim=4, n_components=4, spread=2.0, seed=5)
    x = _noise(4, 4, 2)
    adaptive = MixtureFlow(mix, rtol=1e-8, atol=1e-10).flow(x, 80.0, 0.5)
    fixed = MixtureFlow(mix, method="rk4", steps_per_unit=40).flow(x, 80.0, 0.5)
    assert torch.allclose(adaptive, fixed, rtol=0, atol=1e-6)  # states ~1, RK4 error ~ h^4 = 4e-7
    assert not torch.allclose(adaptive, MixtureFlow(mix, method="rk4", steps_per_unit=2).flow(x, 80.0, 0.5))


def test_one_point_empirical_mixture_flows_on_a_straight_line() -> None:
    # D = x1 everywhere, so dx/dsigma = (x - x1) / sigma: x(s1) = x1 + (s1 / s0) (x(s0) - x1).
    point = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    flow = MixtureFlow(EmpiricalMixture(point))
    x = _noise(3, 3, 4)
    expected = point + (0.7 / 80.0) * (x - point)
    # The tolerance is relative to the state, which starts at ~80: 1e-7 * 80 absolute at the end.
    assert torch.allclose(flow.flow(x, 80.0, 0.7), expected, rtol=0, atol=80 * 1e-7 * 2)


def test_mixture_flow_is_a_warm_start_for_sample() -> None:
    # On the mixture's own exact denoiser, the teleport must land where an RK4 solve of the same ODE
    # does: the solver then continues from (nearly) the same state on the same grid.
    mix = anisotropic_mixture(dim=4, n_components=3, spread=2.0, seed=7)
    x = _noise(4, 4, 3)
    grid = gaussport.grids.karras(8, 0.002, 80.0)
    warm = gaussport.sample(
        mix, x, grid, "heun", warm_start=MixtureFlow(mix), sigma_skip=1.0, teleport="respace", disable=True
    )
    at_skip = reference_solve(mix, x, (80.0, 1.0), steps_per_unit=50)
    cold = gaussport.solve(mix, at_skip, warm.sigmas, "heun", disable=True)
    assert warm.teleport == (80.0, 1.0)
    assert warm.nfe == cold.nfe  # the teleport itself cost no model call
    assert torch.allclose(warm.x, cold.x, rtol=0, atol=1e-7)


def test_float32_state_and_direction_checks() -> None:
    g = random_gaussian([1.0, 0.2], seed=0)
    flow = MixtureFlow(GaussianMixture([g]))
    x = _noise(2, 2, 5).float()
    out = flow.flow(x, 80.0, 1.0)
    assert out.dtype == torch.float32 and torch.allclose(
        out.double(), g.flow(x.double(), 80.0, 1.0), rtol=1e-6
    )
    assert torch.equal(flow.flow(x, 3.0, 3.0), x)
    assert isinstance(flow.moments(), Gaussian) and "dopri5" in repr(flow)
    assert flow.statistics is flow.statistics and torch.allclose(flow.statistics.mean, g.mean)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda f, x: f.flow(x, 80.0, 0.0), ValueError),
        (lambda f, x: f.flow(x, 0.0, 1.0), ValueError),
        (lambda f, x: f.flow(x, math.nan, 1.0), ValueError),
        (lambda f, x: f.flow(x[:, :1], 80.0, 1.0), ValueError),
        (lambda f, x: MixtureFlow(f.mixture, method="euler"), ValueError),
        (lambda f, x: MixtureFlow(f.mixture, rtol=-1.0), ValueError),
        (lambda f, x: MixtureFlow(f.mixture, rtol=0.0, atol=0.0), ValueError),
        (lambda f, x: MixtureFlow(f.mixture, rtol="tight"), TypeError),
        (lambda f, x: MixtureFlow(GaussianMixture), TypeError),
        (lambda f, x: MixtureFlow(f.mixture, max_steps=3).flow(x, 80.0, 1e-3), ValueError),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception]) -> None:  # noqa: ANN001
    flow = MixtureFlow(GaussianMixture([random_gaussian([1.0, 0.2], seed=0)]))
    with pytest.raises(error):
        call(flow, _noise(2, 2, 6))


def test_dpm_solver_v3_builds_its_ems_from_the_mixture_flows_moments() -> None:
    """sample() gives DPM-Solver-v3 the analytic EMS of the mixture's moment-matched Gaussian, so
    with a MixtureFlow warm start it runs exactly as with that Gaussian's EMS passed explicitly."""
    from gaussport import grids
    from gaussport.sampling import with_warm_start_statistics
    from gaussport.solvers import get as get_solver

    mixture = anisotropic_mixture(dim=4, n_components=3, seed=0)
    flow = MixtureFlow(mixture)
    sig = grids.karras(6, 0.01, 20.0)
    x = 20.0 * torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = gaussport.sample(mixture, x, sig, "dpm_solver_v3", warm_start=flow, sigma_skip=5.0, disable=True)
    below = got.sigmas
    solver = with_warm_start_statistics(get_solver("dpm_solver_v3"), flow.statistics, below)
    assert solver.ems is not None and solver.ems.source != "degenerate"
    by_hand = gaussport.sample(mixture, x, sig, solver, warm_start=flow, sigma_skip=5.0, disable=True)
    torch.testing.assert_close(got.x, by_hand.x, rtol=0, atol=0)
