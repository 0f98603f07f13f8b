"""Inversion (increasing grids) over every registered solver: the declared support is honoured.

A solver declares ``supports_inversion`` (gaussport.loop.Solver). If it does, it must be exact on a
constant denoiser upwards, count its evaluations as declared, and converge upwards at the orders it
declares (cold start, and with exact history where it can seed one) against the closed-form
Gaussian flow; if it does not, gaussport.inversion.invert refuses it with an error naming the
solvers that can (docs/conventions.md#grids).
"""

from __future__ import annotations

import math

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.inversion import invert
from gaussport.testing import (
    ConstantDenoiser,
    CountingDenoiser,
    GaussianProblem,
    anisotropic_gaussian,
    exact_history_state,
    supports_seeding,
)

# The same step counts as tests/solvers/test_order.py: the asymptotic range for every solver.
STEPS = (16, 32, 64, 128, 256, 512)
# The solvers the inversion feature promises (the minimum); UniPC also without its corrector.
PROMISED = ("euler", "heun", "ddim", "dpmpp_2m", "unipc_bh1", "unipc_bh2")


def _upward_error(
    problem: GaussianProblem, solver: gaussport.solvers.Solver, up: tuple[float, ...], history: str
) -> float:
    x = problem.state(up[0])
    state = None
    if history == "exact":
        solver, state = exact_history_state(solver, problem.gaussian, x, up)
    out = invert(problem.gaussian, x, up, solver, state=state, disable=True).x
    ref = problem.exact(x, up[0], up[-1])
    return float(((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max())


def measured_upward_order(solver: gaussport.solvers.Solver, history: str) -> float:
    """Slope of log error against log steps over the last three step counts, grids from 0.05 up to 3."""
    problem = GaussianProblem(anisotropic_gaussian())
    points = []
    for n in STEPS:
        up = grids.exponential(n + 1, 0.05, 3.0, append_zero=False)[::-1]
        err = _upward_error(problem, solver, up, history)
        if err > 1e-11:
            points.append((math.log(n), math.log(err)))
    points = points[-3:]
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return -sum((p[0] - mx) * (p[1] - my) for p in points) / sum((p[0] - mx) ** 2 for p in points)


def test_the_declared_inversion_support_is_honoured(solver_name: str) -> None:
    solver = gaussport.solvers.get(solver_name)
    declared = type(solver).supports_inversion
    assert isinstance(declared, bool), f"{solver_name}: supports_inversion must be a bool class attribute"
    assert (solver_name in gaussport.solvers.available(inversion=True)) == declared
    g = anisotropic_gaussian(dim=4)
    up = (0.05, 0.2, 0.9, 3.0, 7.5)
    x = g.sample(2, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    if not declared:
        with pytest.raises(ValueError, match="cannot integrate an increasing grid") as raised:
            invert(g, x, up, solver_name, disable=True)
        message = str(raised.value)
        assert repr(solver_name) in message
        assert all(name in message for name in gaussport.solvers.available(inversion=True))
        return
    # Exact on a constant denoiser: x(s) = c + (x0 - c) s / s0 in either direction.
    c = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = invert(ConstantDenoiser(c), x, up, solver, disable=True).x
    exact = c + (x - c) * (up[-1] / up[0])
    assert float((out - exact).abs().max() / exact.abs().max()) < 1e-12, solver_name
    # The evaluations it makes are the ones it declares, none at sigma = 0.
    counter = CountingDenoiser(g)
    sol = invert(counter, x, up, solver, disable=True)
    assert sol.nfe == counter.calls == solver.evaluations(up), solver_name
    assert all(s > 0 for s in counter.sigmas)


@pytest.mark.slow
def test_inversion_converges_at_the_declared_orders(solver_name: str) -> None:
    solver = gaussport.solvers.get(solver_name)
    if not solver.supports_inversion:
        pytest.skip(f"{solver_name} does not support inversion (refusal: the test above)")
    cold = measured_upward_order(solver, "cold")
    assert abs(cold - solver.cold_start_order) < 0.3, f"{solver_name} upwards: cold-start order {cold:.2f}"
    if supports_seeding(solver):
        exact = measured_upward_order(solver, "exact")
        assert abs(exact - solver.order) < 0.3, f"{solver_name} upwards: order with exact history {exact:.2f}"


def test_the_promised_solvers_support_inversion() -> None:
    assert set(PROMISED) <= set(gaussport.solvers.available(inversion=True))
    without_corrector = gaussport.solvers.get("unipc_bh2", corrector=False)
    assert without_corrector.supports_inversion
    assert abs(measured_upward_order(without_corrector, "cold") - without_corrector.cold_start_order) < 0.3
    assert set(gaussport.solvers.available(inversion=True)) < set(gaussport.solvers.available())
