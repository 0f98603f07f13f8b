"""DPM-Solver-v3's guard for warm-start EMS (docs/ems.md#the-guard).

Expected values come from the definitions in docs/ems.md#the-guard, recomputed here independently
(the blend weight as a power of sigma, the mean step from the grid's end points).
"""

from __future__ import annotations

import math

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.ems import EMS, analytic_ems, degenerate_like, revert_above
from gaussport.sampling import with_warm_start_statistics
from gaussport.solvers import get
from gaussport.solvers.dpm_solver_v3 import GUARD_LEVEL, GUARD_MEAN_STEP, GUARD_STEP
from gaussport.testing import anisotropic_gaussian


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).flatten(1).norm(dim=1).max() / b.flatten(1).norm(dim=1).min())


def test_revert_above_is_the_convex_blend_with_the_degenerate_ems() -> None:
    g = anisotropic_gaussian(dim=6)
    ems = analytic_ems(g, sigma_min=0.01, sigma_max=80.0, intervals=200)
    guarded = revert_above(ems, 3.0, width=0.5)
    # w = S((log 3 - log sigma) / 0.5) = 1 / (1 + (sigma / 3)^2).
    w = torch.tensor([1.0 / (1.0 + (s / 3.0) ** 2) for s in ems.sigmas], dtype=torch.float64)[:, None]
    torch.testing.assert_close(guarded.l, w * ems.l + 1.0 - w, rtol=0, atol=1e-12)
    torch.testing.assert_close(guarded.s, w * ems.s, rtol=0, atol=1e-12)
    torch.testing.assert_close(guarded.b, w * ems.b, rtol=0, atol=1e-12)
    assert guarded.source == "analytic" and guarded.metadata["guard"] == {"level": 3.0, "width": 0.5}
    assert guarded.lambdas == ems.lambdas and "guard" not in ems.metadata
    # One guarded EMS per base EMS and arguments (its coefficient tables are memoised on it).
    assert revert_above(ems, 3.0, width=0.5) is guarded and revert_above(ems, 5.0) is not guarded
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="level must be a positive finite number"):
            revert_above(ems, bad)
    with pytest.raises(TypeError, match="width must be a number"):
        revert_above(ems, 3.0, width="wide")  # type: ignore[arg-type]


def test_degenerate_like_is_the_degenerate_ems_marked_as_guarded() -> None:
    ems = analytic_ems(anisotropic_gaussian(dim=4), sigma_min=0.01, sigma_max=80.0, intervals=50)
    flat = degenerate_like(ems)
    assert flat.is_degenerate() and flat.source == "degenerate" and flat.shape == ems.shape
    assert flat.metadata["guard"] == {"degenerate": True} and degenerate_like(ems) is flat


def test_the_guard_picks_the_statistics_from_the_run_and_keeps_explicit_ems() -> None:
    g = anisotropic_gaussian(dim=6)
    solver = get("dpm_solver_v3")
    # Mean step log(80 / 0.002) / n over n steps between positive levels: n = 3 -> 3.53 > 2,
    # n = 8 -> 1.32 < 2.
    assert math.log(80.0 / 0.002) / 3 > GUARD_MEAN_STEP > math.log(80.0 / 0.002) / 8
    few = with_warm_start_statistics(solver, g, grids.karras(4, 0.002, 80.0))
    assert few.ems.is_degenerate() and "guard" in few.ems.metadata
    many = with_warm_start_statistics(solver, g, grids.karras(9, 0.002, 80.0))
    assert many.ems.source == "analytic" and many.ems.metadata["guard"]["level"] == GUARD_LEVEL
    unguarded = with_warm_start_statistics(get("dpm_solver_v3", guard=False), g, grids.karras(4, 0.002, 80.0))
    assert unguarded.ems.source == "analytic" and "guard" not in unguarded.ems.metadata
    # Statistics the caller gives are used as given.
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=50)
    assert (
        with_warm_start_statistics(get("dpm_solver_v3", ems=ems), g, grids.karras(4, 0.002, 80.0)).ems is ems
    )


def test_guarded_runs_cap_the_order_on_long_steps_only() -> None:
    g = anisotropic_gaussian(dim=6)
    # Steps 0.2 (short) in lambda from sigma 2, then 1.0 (long), then short again.
    lambdas = [-math.log(2.0) + 0.2 * k for k in range(5)]
    lambdas += [lambdas[-1] + 1.0] + [lambdas[-1] + 1.0 + 0.2 * k for k in range(1, 5)]
    sigmas = tuple(math.exp(-lam) for lam in lambdas)
    x = torch.zeros(2, 6, dtype=torch.float64)
    ems = analytic_ems(g, sigma_min=sigmas[-1], sigma_max=sigmas[0], intervals=400)
    plain = get("dpm_solver_v3", ems=ems, lower_order_final=False)
    guarded = get("dpm_solver_v3", ems=revert_above(ems, GUARD_LEVEL), lower_order_final=False)
    long = [h > GUARD_STEP for h in (b - a for a, b in zip(lambdas[:-1], lambdas[1:], strict=False))]
    plain_orders = [entry.order for entry in plain.init(x, sigmas).plan]
    guarded_orders = [entry.order for entry in guarded.init(x, sigmas).plan]
    assert plain_orders == [1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert guarded_orders == [2 if is_long else o for o, is_long in zip(plain_orders, long, strict=True)]
    assert guarded_orders[4] == 2 and guarded_orders[5] == 3
    # The run follows its plan (the step logic agrees with it: same result as a continued run).
    head = gaussport.solve(g, x + 1.0, sigmas[:6], guarded, disable=True)
    tail = gaussport.solve(g, head.x, sigmas[5:], guarded, state=head.state, disable=True)
    whole = gaussport.solve(g, x + 1.0, sigmas, guarded, disable=True)
    assert _rel(tail.x, whole.x) < 1e-12


def test_the_guard_costs_no_order_on_explicit_ems_where_the_gaussian_is_the_model() -> None:
    g = anisotropic_gaussian(dim=8)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=1200)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = grids.exponential(6, 0.002, 80.0, append_zero=False)
    on = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True)
    off = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, guard=False, disable=True)
    assert torch.equal(on.x, off.x)


def test_the_guard_stops_the_divergence_on_the_digits_network() -> None:
    # Without the guard, v3 with the analytic EMS of the digits Gaussian diverges from sigma 80
    # at 4 steps (relative error ~20 on 128 seeds, docs/ems.md#the-guard); guarded it is within a
    # 20% of DPM-Solver++(2M), both against a 64-step 2M reference (4 seeds, ~1 s).
    from gaussport.digits import load_digits_denoiser, load_digits_gaussian

    torch.manual_seed(0)
    net, gaussian = load_digits_denoiser(), load_digits_gaussian()
    x = 80.0 * torch.randn(4, *gaussian.shape, generator=torch.Generator().manual_seed(0))
    fine = grids.karras(64, 0.002, 80.0)
    with torch.no_grad():
        ref = gaussport.solve(net, x, fine, "dpmpp_2m", disable=True).x
        sig = grids.karras(4, 0.002, 80.0)
        err = {
            name: _rel(
                gaussport.sample(
                    net, x, sig, solver, warm_start=gaussian, sigma_skip=80.0, disable=True, **opts
                ).x,
                ref,
            )
            for name, solver, opts in (
                ("guarded", "dpm_solver_v3", {}),
                ("unguarded", "dpm_solver_v3", {"guard": False}),
                ("2m", "dpmpp_2m", {}),
            )
        }
    assert err["unguarded"] > 3.0, err
    assert err["guarded"] < 1.2 * err["2m"], err  # measured 0.60 vs 0.65 (unguarded 33)


def test_ems_type_is_exported() -> None:
    assert isinstance(degenerate_like(EMS.degenerate((3,), intervals=2)), EMS)
