"""DPM-Solver-v3: exactness with exact EMS, reduction to DPM-Solver++, parity with the official
code, mid-trajectory starts, the automatic analytic EMS of gaussport.sample, and the step logic.

The shared contract (constant exactness, batch independence, dtypes, NFE, RNG, start anywhere,
measured order) runs over this solver automatically (tests/solvers/test_contracts.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Dense, Gaussian
from gaussport.ems import EMS, analytic_ems, revert_above
from gaussport.sampling import with_warm_start_statistics
from gaussport.solvers import get
from gaussport.solvers.dpm_solver_v3 import GUARD_LEVEL, GUARD_WIDTH, taylor_weights
from gaussport.testing import CountingDenoiser, anisotropic_gaussian, gaussian_of_shape, random_gaussian

FIXTURE = Path(__file__).parent.parent / "fixtures" / "dpm_solver_v3_official.npz"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).flatten(1).norm(dim=1).max() / b.flatten(1).norm(dim=1).min())


def independent_problem(representation: str = "diagonal") -> Gaussian:
    """docs/ems.md#the-16-dimensional-test-problem: 16 independent dimensions, mu_d ~ 0.5 N(0, 1),
    s_d log-spaced in [0.05, 2]."""
    gen = torch.Generator().manual_seed(0)
    mu = 0.5 * torch.randn(16, generator=gen, dtype=torch.float64)
    var = torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=torch.float64) ** 2
    if representation == "diagonal":
        return Gaussian.diagonal(mu, var)
    perm = torch.eye(16, dtype=torch.float64)[torch.randperm(16, generator=gen)]
    return Gaussian(mu, Dense(torch.diagonal(perm.T @ torch.diag(var) @ perm), perm))


# ----------------------------------------------------------------------------- exact EMS
@pytest.mark.parametrize(
    ("representation", "counts"),
    [
        # Levels on EMS nodes (counts dividing 4800: 5, 6, 100) and between them, including the
        # five counts with the largest errors of the full sweep below (9, 7, 14, 98, 49: 2.6e-7
        # to 2.1e-7).
        pytest.param("diagonal", (5, 6, 7, 9, 14, 49, 98, 100), id="diagonal"),
        pytest.param("dense", (5, 10, 33, 100), id="dense"),
        pytest.param(
            "diagonal",
            (*range(5, 51), 60, 70, 80, 90, 97, 98, 99, 100),
            id="diagonal-every-count",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_exact_ems_make_v3_exact_up_to_quadrature(representation: str, counts: Sequence[int]) -> None:
    # With l*, s*, b* of independent Gaussian coordinates, g is constant along every trajectory,
    # so even the first-order update is exact: only the quadrature of the EMS integrals remains
    # (reference: 5e-8 with N = 4800). Log-uniform grids, 80 -> 0.002; the slow case runs every
    # step count 5..50 and 60..100 by tens with 97-99 (a full 5..100 sweep: worst 2.6e-7, at 9).
    g = independent_problem(representation)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=4800)
    x = g.sample(8, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = g.flow(x, 80.0, 0.002)
    worst = 0.0
    for steps in counts:
        sol = gaussport.solve(
            g,
            x,
            grids.exponential(steps + 1, 0.002, 80.0, append_zero=False),
            "dpm_solver_v3",
            ems=ems,
            disable=True,
        )
        assert sol.nfe == steps
        worst = max(worst, _rel(sol.x, exact))
    assert worst <= 1e-6, worst


def test_exact_ems_on_karras_grids_and_with_the_trapezoid_rule() -> None:
    g = independent_problem()
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=4800)
    x = g.sample(8, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = g.flow(x, 80.0, 0.002)
    for steps in (5, 7, 10, 20, 50):
        sig = grids.karras(steps + 1, 0.002, 80.0, append_zero=False)
        for rule in ("exponential", "trapezoid"):
            sol = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, quadrature=rule, disable=True)
            assert _rel(sol.x, exact) <= 1e-6, (steps, rule)


def test_analytic_ems_beat_degenerate_ems_at_few_steps() -> None:
    # On a correlated Gaussian the analytic EMS are not exact (f is not a function of lambda alone
    # per dimension), but they are the optimal per-dimension statistics: at 5-8 steps they beat
    # DPM-Solver++ (degenerate EMS) by a wide margin (measured 14x and 19x; docs/ems.md).
    g = anisotropic_gaussian(dim=16)
    x = g.sample(8, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = g.flow(x, 80.0, 0.002)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=1200)
    for steps in (5, 8):
        sig = grids.exponential(steps + 1, 0.002, 80.0, append_zero=False)
        analytic = _rel(gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True).x, exact)
        degenerate = _rel(
            gaussport.solve(g, x, sig, "dpm_solver_v3", ems="degenerate", disable=True).x, exact
        )
        assert analytic < degenerate / 5, (steps, analytic, degenerate)


# ----------------------------------------------------------------------------- degenerate = DPM-Solver++
def dpmpp_taylor(denoiser: Gaussian, x: torch.Tensor, sigmas: tuple[float, ...], order: int) -> torch.Tensor:
    """DPM-Solver++ multistep, data prediction, 'taylor' type, in VE coordinates
    (docs/devdocs-derivations.md#one-update-formula-for-every-exponential-multistep-method).

    Written here independently of gaussport's solvers: lambda = -log sigma, h = lambda_t - lambda_s,
    phi_1 = e^{-h} - 1; order 1 (DDIM) x_t = (sigma_t / sigma_s) x_s - phi_1 D_s; order 2 adds
    (phi_1 / h + 1) D1 with D1 = (D_s - D_prev) / r0, r0 = h_prev / h. Warm-up order 1 first.
    """
    prev = None
    for i in range(len(sigmas) - 1):
        s, t = sigmas[i], sigmas[i + 1]
        d = denoiser(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        h = math.log(s / t)
        phi1 = math.expm1(-h)
        x_next = (t / s) * x - phi1 * d
        if order == 2 and prev is not None:
            h_prev = math.log(prev[0] / s)
            d1 = (d - prev[1]) / (h_prev / h)
            x_next = x_next + (phi1 / h + 1.0) * d1
        prev = (s, d)
        x = x_next
    return x


@pytest.mark.parametrize("order", [1, 2])
def test_degenerate_v3_is_dpm_solver_pp_taylor(order: int) -> None:
    g = anisotropic_gaussian(dim=8)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(3), dtype=torch.float64)
    sig = grids.karras(11, 0.002, 80.0, append_zero=False)
    ref = dpmpp_taylor(g, x, sig, order)
    options = {"solver_order": order, "corrector": None, "lower_order_final": False}
    # Exponential rule: exact phi-functions, so equal to round-off for any EMS grid.
    exp = gaussport.solve(g, x, sig, "dpm_solver_v3", ems="degenerate", **options, disable=True).x
    assert _rel(exp, ref) < 1e-12
    # Trapezoid rule (the reference's): equal up to quadrature error, O(h^2) in the EMS grid.
    diffs = []
    for n in (1200, 2400, 4800):
        ems = EMS.degenerate((1,), sigma_min=0.002, sigma_max=80.0, intervals=n)
        trap = gaussport.solve(
            g, x, sig, "dpm_solver_v3", ems=ems, quadrature="trapezoid", **options, disable=True
        ).x
        diffs.append(_rel(trap, ref))
    assert all(3.5 < diffs[i] / diffs[i + 1] < 4.5 for i in range(2)), diffs  # O(N^-2)


# ----------------------------------------------------------------------------- cost per step
def eq9_run(
    g: Gaussian, x: torch.Tensor, sig: tuple[float, ...], ems: EMS, **options: object
) -> torch.Tensor:
    """The solver's step logic written out from paper eq. 9 on the EMS's own table, unfused.

    Each update is ``decay (x_s - phi_0 g_0 - bias - sum_k phi_k g^(k))`` with ``g^(k)`` from the
    Taylor weights of the points' levels; the history moves as ``g <- s_gain (g + b_gain)``; the
    corrector re-takes the previous step with ``g_new = f / s_gain - b_gain``. No trailing 0.
    """
    order, predictor = options["solver_order"], options["predictor"]
    corrector, lof, half = options["corrector"], options["lower_order_final"], options["half"]
    degree = order - 1 + (1 if corrector == "pseudo" else 0)
    table = ems.coefficients(sig, degree=degree, rule="exponential")

    def combine(x_s, step, points, lams, variant):  # type: ignore[no-untyped-def]
        acc = step.phi[0] * points[0] + step.bias
        for k, row in enumerate(taylor_weights(lams, variant), start=1):
            acc = acc + step.phi[k] * sum(w * p for w, p in zip(row, points, strict=True))
        return step.decay * (x_s - acc)

    gs: list[torch.Tensor] = []
    lams: list[float] = []
    prev_x, prev_step, last_order = None, None, 0
    for i in range(len(sig) - 1):
        lam = table.lambdas[i]
        f = (1.0 - table.l[i]) * x - g(x, torch.full((x.shape[0],), sig[i], dtype=x.dtype))
        if prev_step is not None and corrector is not None and (half is None or sig[i] > half):
            c_order = last_order + (1 if corrector == "pseudo" else 0)
            if c_order > 1:
                g_new = f / prev_step.s_gain - prev_step.b_gain
                pts = [gs[0], g_new, *gs[1 : c_order - 1]]
                x = combine(prev_x, prev_step, pts, [lams[0], lam, *lams[1 : c_order - 1]], corrector)
        if prev_step is not None:
            gs = [prev_step.s_gain * (gi + prev_step.b_gain) for gi in gs]
        gs, lams = [f, *gs][:order], [lam, *lams][:order]
        p = min(order, len(gs), len(sig) - 1 - i) if lof else min(order, len(gs))
        prev_x, prev_step, last_order = x, table.steps[i], p
        x = combine(x, table.steps[i], gs[:p], lams[:p], predictor)
    return x


@pytest.mark.parametrize(
    "options",
    [
        {
            "solver_order": 3,
            "predictor": "normal",
            "corrector": "normal",
            "lower_order_final": True,
            "half": None,
        },
        {
            "solver_order": 3,
            "predictor": "pseudo",
            "corrector": "pseudo",
            "lower_order_final": False,
            "half": 2.0,
        },
        {
            "solver_order": 2,
            "predictor": "normal",
            "corrector": "pseudo",
            "lower_order_final": True,
            "half": None,
        },
        {
            "solver_order": 1,
            "predictor": "normal",
            "corrector": None,
            "lower_order_final": False,
            "half": None,
        },
    ],
    ids=["3-normal", "3-pseudo-half", "2-pseudo-corrector", "1"],
)
def test_fused_updates_equal_eq9_step_by_step(options: dict) -> None:
    # The solver folds each update into precomputed per-step coefficients (once per run); the
    # result must be eq. 9 applied step by step, to float64 rounding, with per-dimension EMS.
    g = gaussian_of_shape((2, 3, 3), seed=4)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=300)
    x = g.sample(3, 60.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    for sig in (grids.karras(9, 0.01, 60.0, append_zero=False), (60.0, 20.0, 3.0, 1.0, 0.3, 0.1, 0.01)):
        sol = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True, **options)
        assert _rel(sol.x, eq9_run(g, x, sig, ems, **options)) < 1e-13


def test_the_degenerate_ems_need_no_table_and_runs_reuse_their_plan() -> None:
    g = anisotropic_gaussian(dim=6)
    x = g.sample(2, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = grids.karras(8, 0.002, 80.0, append_zero=False)
    first = gaussport.solve(g, x, sig, "dpm_solver_v3", disable=True)
    # Closed form: Python floats, equal to the integrals of the tabulated degenerate EMS.
    closed = first.state.table
    table = EMS.degenerate((), sigma_min=0.002, sigma_max=80.0, intervals=5).coefficients(sig, degree=2)
    for ours, tab in zip(closed.steps, table.steps, strict=True):
        assert isinstance(ours.decay, float) and ours.s_gain == 1.0 and ours.b_gain == ours.bias == 0.0
        assert ours.decay == pytest.approx(float(tab.decay), rel=1e-15)
        for k in range(3):
            assert ours.phi[k] == pytest.approx(float(tab.phi[k]), rel=1e-13)
    # The per-step updates are built once and shared by every run over the same levels.
    again = gaussport.solve(g, x, sig, "dpm_solver_v3", disable=True)
    assert again.state.plan is first.state.plan and torch.equal(again.x, first.x)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=50)
    a = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True)
    b = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True)
    assert b.state.plan is a.state.plan and isinstance(a.state.plan[0].predictor.weights[0], torch.Tensor)


def test_taylor_weights_differentiate_polynomials_exactly() -> None:
    lams = [0.3, -0.2, -0.9, -1.7]  # expansion point first, as the solver passes them
    coeffs = [0.7, -1.3, 0.4, 2.1]  # g(u) = sum_j coeffs[j] (u - lam_0)^j
    for n in (1, 2, 3):
        weights = taylor_weights(lams[: n + 1], "normal")
        # With n + 1 points the degree-n Taylor polynomial is exact on a degree-n g.
        exact = [sum(c * (u - lams[0]) ** j for j, c in enumerate(coeffs[: n + 1])) for u in lams[: n + 1]]
        for k in range(1, n + 1):
            derivative = sum(w * v for w, v in zip(weights[k - 1], exact, strict=True))
            assert derivative == pytest.approx(math.factorial(k) * coeffs[k], rel=1e-12)
    with pytest.raises(ValueError, match="repeated noise levels"):
        taylor_weights([0.1, 0.5, 0.5], "normal")


# ----------------------------------------------------------------------------- official code
def _official_cases() -> list[dict]:
    with np.load(FIXTURE) as data:
        return json.loads(str(data["provenance"]))["cases"]


@pytest.mark.parametrize("case", _official_cases(), ids=lambda c: c["name"])
def test_parity_with_official_implementation(case: dict) -> None:
    # tests/fixtures/dpm_solver_v3_official.md: thu-ml/DPM-Solver-v3 @ ba16871, float64, CPU.
    with np.load(FIXTURE) as data:
        arrays = {k: data[k] for k in data.files}
    g = Gaussian(torch.from_numpy(arrays["mean"]), torch.from_numpy(arrays["cov"]))
    sched = case["schedule"]
    lam = arrays[f"ems_{sched}_lambda_range"]
    ems = EMS.from_lambdas(
        *(arrays[f"ems_{sched}_{k}"] for k in "lsb"), lambda_start=float(lam[0]), lambda_end=float(lam[1])
    )
    name = case["name"]
    corrector = ("pseudo" if case["c_pseudo"] else "normal") if case["use_corrector"] else None
    solver = get(
        "dpm_solver_v3",
        ems=ems,
        solver_order=case["order"],
        predictor="pseudo" if case["p_pseudo"] else "normal",
        corrector=corrector,
        lower_order_final=case["lower_order_final"],
        half=0.5 if case["half"] else None,
        quadrature="trapezoid",
    )
    sigmas = [float(s) for s in arrays[f"{name}_sigmas"]]
    sol = gaussport.solve(g, torch.from_numpy(arrays[f"{name}_x0"]), sigmas, solver, disable=True)
    assert sol.nfe == case["steps"]
    assert _rel(sol.x, torch.from_numpy(arrays[f"{name}_x_end"])) < 1e-12


# ----------------------------------------------------------------------------- mid-trajectory start
def test_mid_trajectory_start_is_as_accurate_as_a_full_run_over_the_sub_range() -> None:
    g = independent_problem()
    full_range = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=4800)
    skip = 3.0  # not an EMS grid level
    sub_range = analytic_ems(g, sigma_min=0.002, sigma_max=skip, intervals=2400)
    x80 = g.sample(8, 80.0, torch.Generator().manual_seed(5), dtype=torch.float64)
    x_skip = g.flow(x80, 80.0, skip)
    exact = g.flow(x80, 80.0, 0.002)
    for steps in (5, 10, 20):
        sig = grids.exponential(steps + 1, 0.002, skip, append_zero=False)
        mid = gaussport.solve(g, x_skip, sig, "dpm_solver_v3", ems=full_range, disable=True)
        own = gaussport.solve(g, x_skip, sig, "dpm_solver_v3", ems=sub_range, disable=True)
        e_mid, e_own = _rel(mid.x, exact), _rel(own.x, exact)
        assert e_mid <= 1e-6 and e_own <= 1e-6, (steps, e_mid, e_own)
        # The same run through the warm start: teleport to sigma_skip, then the same grid.
        warm = gaussport.sample(
            g,
            x80,
            grids.exponential(steps + 1, 0.002, 80.0, append_zero=False),
            "dpm_solver_v3",
            warm_start=g,
            sigma_skip=skip,
            teleport="respace",
            ems=full_range,
            disable=True,
        )
        assert warm.sigmas == pytest.approx(sig, rel=1e-12) and _rel(warm.x, mid.x) < 1e-12
        # What the reference does with t_start = t_mid: the same rows stretched over [0.002, 3].
        stretched = EMS(full_range.l, full_range.s, full_range.b, sigma_min=0.002, sigma_max=skip)
        naive = gaussport.solve(g, x_skip, sig, "dpm_solver_v3", ems=stretched, disable=True)
        assert _rel(naive.x, exact) > 1000 * e_mid


def test_runs_outside_the_ems_range_are_refused() -> None:
    g = independent_problem()
    ems = analytic_ems(g, sigma_min=0.01, sigma_max=10.0, intervals=100)
    x = g.sample(2, 20.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="leave the range of the EMS"):
        gaussport.solve(g, x, grids.karras(6, 0.01, 20.0), "dpm_solver_v3", ems=ems, disable=True)
    with pytest.raises(ValueError, match="leave the range of the EMS"):
        gaussport.solve(g, x, grids.karras(6, 0.002, 10.0), "dpm_solver_v3", ems=ems, disable=True)
    # A final 0 is not an EMS level: the step to 0 is x = D.
    gaussport.solve(g, x, grids.karras(6, 0.01, 10.0), "dpm_solver_v3", ems=ems, disable=True)
    with pytest.raises(ValueError, match="do not fit data"):
        gaussport.solve(g, x[:, :8], grids.karras(6, 0.01, 10.0), "dpm_solver_v3", ems=ems, disable=True)


# ----------------------------------------------------------------------------- gaussport.sample
def test_sample_builds_analytic_ems_from_the_warm_start() -> None:
    g = anisotropic_gaussian(dim=8)
    sig = grids.karras(12, 0.002, 80.0)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    counter = CountingDenoiser(g)
    auto = gaussport.sample(
        counter, x, sig, "dpm_solver_v3", warm_start=g, sigma_skip=10.0, teleport="respace", disable=True
    )
    assert auto.nfe == counter.calls == len(sig) - 1  # NFE = steps (the last one is x = D)
    run = auto.sigmas
    explicit = analytic_ems(g, sigma_min=run[-2], sigma_max=run[0], intervals=1200)
    manual = gaussport.sample(
        g,
        x,
        sig,
        "dpm_solver_v3",
        warm_start=g,
        sigma_skip=10.0,
        teleport="respace",
        ems=revert_above(explicit, GUARD_LEVEL, width=GUARD_WIDTH),  # the default guard (docs/ems.md)
        disable=True,
    )
    assert torch.equal(auto.x, manual.x)
    assert auto.state.ems.source == "analytic"
    # Nothing is cached behind the caller's back: a second run builds equal statistics anew; a
    # cache the caller owns is reused.
    again = gaussport.sample(
        g, x, sig, "dpm_solver_v3", warm_start=g, sigma_skip=10.0, teleport="respace", disable=True
    )
    assert again.state.ems is not auto.state.ems and torch.equal(again.state.ems.s, auto.state.ems.s)
    cache: dict = {}
    solver = gaussport.solvers.get("dpm_solver_v3")
    first = with_warm_start_statistics(solver, g, run, cache=cache)
    assert list(cache) == [(run[-2], run[0], 1200)]
    assert with_warm_start_statistics(solver, g, run, cache=cache).ems is first.ems
    # Without a warm start, or with ems="degenerate", the degenerate EMS (DPM-Solver++).
    plain = gaussport.solve(g, x, sig, "dpm_solver_v3", disable=True)
    assert plain.state.ems.source == "degenerate"
    forced = gaussport.sample(
        g,
        x,
        sig,
        "dpm_solver_v3",
        warm_start=g,
        sigma_skip=10.0,
        teleport="respace",
        ems="degenerate",
        disable=True,
    )
    assert forced.state.ems.source == "degenerate"
    # The grid ends in 0, whose last step is x = D(x, sigma_min): compare with D at the exact state.
    at_min = g.flow(x, 80.0, run[-2])
    ref = g(at_min, torch.full((4,), run[-2], dtype=torch.float64))
    assert _rel(auto.x, ref) < _rel(forced.x, ref)


def test_a_no_op_teleport_still_uses_the_analytic_ems() -> None:
    # sigma_skip at the grid's first level moves nothing, but the warm start is given: the solver
    # must run with its analytic EMS (it used to fall back to DPM-Solver++ silently).
    g = Gaussian.diagonal(torch.zeros(8, dtype=torch.float64), torch.logspace(-2, 0, 8, dtype=torch.float64))
    sig = grids.karras(10, 0.002, 80.0)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    at_min = g.flow(x, 80.0, sig[-2])
    exact = g(at_min, torch.full((4,), sig[-2], dtype=torch.float64))

    def error(skip: float) -> float:
        # The warm start IS the model here: the guard (which reverts the EMS to degenerate above
        # GUARD_LEVEL for a model the Gaussian only approximates, docs/ems.md#the-guard) is off.
        sol = gaussport.sample(
            g, x, sig, "dpm_solver_v3", warm_start=g, sigma_skip=skip, guard=False, disable=True
        )
        assert sol.state.ems.source == "analytic"
        return _rel(sol.x, exact)

    # Exact EMS of a diagonal Gaussian make v3 exact up to quadrature, with or without a teleport;
    # DPM-Solver++ (degenerate EMS) from sigma 80 at 9 steps is far off.
    degenerate = _rel(gaussport.solve(g, x, sig, "dpm_solver_v3", disable=True).x, exact)
    assert error(80.0) < 1e-4 and error(sig[1]) < 1e-4
    assert degenerate > 100 * error(80.0)


def test_realised_grid_is_the_grid_given() -> None:
    # No snapping: the EMS are interpolated at every level, so Solution.sigmas, the callback levels
    # and the evaluation levels are exactly the caller's grid (EMS.snap gives reference grids).
    g = anisotropic_gaussian(dim=4)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=37)  # coarse: levels fall between nodes
    sig = grids.karras(9, 0.002, 80.0)
    x = g.sample(2, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    counter = CountingDenoiser(g)
    seen: list[tuple[float, float]] = []
    sol = gaussport.solve(
        counter,
        x,
        sig,
        "dpm_solver_v3",
        ems=ems,
        disable=True,
        callback=lambda info: seen.append((info.sigma, info.sigma_next)),
    )
    assert sol.sigmas == sig and seen == list(zip(sig, sig[1:], strict=False))
    assert counter.sigmas == pytest.approx(list(sig[:-1]), rel=1e-6)  # float32 sigma tensors
    snapped = ems.snap(sig)
    assert snapped != sig and snapped[-1] == 0.0
    assert all(min(abs(-math.log(s) - node) for node in ems.lambdas) < 1e-12 for s in snapped[:-1])
    assert gaussport.solve(g, x, snapped, "dpm_solver_v3", ems=ems, disable=True).sigmas == snapped


# ----------------------------------------------------------------------------- step logic
def test_continuing_a_run_with_its_state() -> None:
    g = anisotropic_gaussian(dim=6)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=300)
    sig = grids.exponential(13, 0.002, 80.0, append_zero=False)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = get("dpm_solver_v3", ems=ems, lower_order_final=False)
    whole = gaussport.solve(g, x, sig, solver, disable=True)
    first = gaussport.solve(g, x, sig[:6], solver, disable=True)
    second = gaussport.solve(g, first.x, sig[5:], solver, state=first.state, disable=True)
    assert _rel(second.x, whole.x) < 1e-13


# ---------------------------------------------------------------------- every valid grid (issue 12 item 4)
@pytest.mark.parametrize(
    "grid",
    [
        (100.0, 0.0),
        (400.0,),
        (0.001, 0.0),
        (400.0, 100.0, 0.0),
        (1e3, 30.0, 1e-4, 0.0),
        (0.001, 0.0005),
        (5.0,),
    ],
)
def test_every_valid_grid_runs_with_the_default_ems(grid: tuple[float, ...]) -> None:
    """No EMS range the user never gave: the degenerate EMS is built over the run's own levels."""
    g = anisotropic_gaussian(dim=6)
    x = g.sample(3, grid[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = gaussport.solve(g, x, grid, "dpm_solver_v3", disable=True)
    assert sol.nfe == len(grid) - 1 and bool(torch.isfinite(sol.x).all())
    assert sol.state.ems.source == "degenerate" and sol.state.ems.covers(grid)
    if len(grid) == 1:
        assert torch.equal(sol.x, x)  # the documented no-op
        return
    # The degenerate EMS make it DPM-Solver++ (taylor type), whatever the levels.
    options = {"solver_order": 2, "corrector": None, "lower_order_final": False}
    v3 = gaussport.solve(g, x, grid, "dpm_solver_v3", disable=True, **options).x
    assert _rel(v3, gaussport.solve(g, x, grid, "dpmpp_2m_taylor", disable=True).x) < 1e-12


@pytest.mark.parametrize(
    ("grid", "skip"),
    [
        ((80.0, 10.0, 1.0, 0.001, 0.0005, 0.0), 0.001),
        ((400.0, 100.0, 10.0, 0.0), 400.0),
        ((400.0, 0.0), 200.0),
    ],
)
def test_sample_runs_below_and_above_the_usual_range(grid: tuple[float, ...], skip: float) -> None:
    """The analytic EMS of the warm start are built over the levels the solver integrates."""
    g = anisotropic_gaussian(dim=6)
    x = g.sample(3, grid[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    # The warm start is the model: no guard (docs/ems.md#the-guard), so the EMS are exact.
    sol = gaussport.sample(
        g, x, grid, "dpm_solver_v3", warm_start=g, sigma_skip=skip, guard=False, disable=True
    )
    assert bool(torch.isfinite(sol.x).all()) and sol.state.ems.covers(sol.sigmas)
    last = sol.sigmas[-2]  # the last step is x = D there
    exact = g(g.flow(x, grid[0], last), torch.full((3,), last, dtype=torch.float64))
    assert _rel(sol.x, exact) < 1e-3


def test_sample_with_sigma_skip_below_every_level() -> None:
    g = anisotropic_gaussian(dim=6)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = gaussport.sample(
        g, x, (80.0, 10.0, 1.0, 0.0), "dpm_solver_v3", warm_start=g, sigma_skip=0.001, disable=True
    )
    at_skip = g.flow(x, 80.0, 0.001)
    assert sol.nfe == 1 and _rel(sol.x, g(at_skip, torch.full((3,), 0.001, dtype=torch.float64))) < 1e-12


@pytest.mark.parametrize(
    "options", [{}, {"corrector": "pseudo"}, {"quadrature": "trapezoid", "solver_order": 2}]
)
def test_continuing_a_run_with_the_default_ems(options: dict) -> None:
    """docs/solvers.md: solve(G[:k]) then solve(G[k-1:], state=...) equals solve(G), default EMS too."""
    g = anisotropic_gaussian(dim=6)
    sig = grids.exponential(13, 0.002, 80.0, append_zero=True)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = gaussport.solve(g, x, sig, "dpm_solver_v3", lower_order_final=False, disable=True, **options)
    for k in (2, 3, 7, 12):
        first = gaussport.solve(
            g, x, sig[:k], "dpm_solver_v3", lower_order_final=False, disable=True, **options
        )
        second = gaussport.solve(
            g,
            first.x,
            sig[k - 1 :],
            "dpm_solver_v3",
            lower_order_final=False,
            state=first.state,
            disable=True,
            **options,
        )
        assert _rel(second.x, whole.x) < 1e-13 and first.nfe + second.nfe == whole.nfe
        assert second.state.ems.source == "degenerate"


def test_continuing_past_the_ems_of_the_state(caplog: pytest.LogCaptureFixture) -> None:
    g = anisotropic_gaussian(dim=6)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    # A sample run's analytic EMS cover its own levels [5, 10]; the continuation runs with its own
    # (default: degenerate) EMS over [0.05, 5] and warms up anew, saying so.
    first = gaussport.sample(
        g, x, (80.0, 10.0, 5.0), "dpm_solver_v3", warm_start=g, sigma_skip=10.0, disable=True
    )
    assert first.state.ems.source == "analytic"
    with caplog.at_level("INFO", logger="gaussport"):
        second = gaussport.solve(
            g, first.x, (5.0, 1.0, 0.05), "dpm_solver_v3", state=first.state, disable=True
        )
    assert "history restarts" in caplog.text and second.state.ems.source == "degenerate"
    fresh = gaussport.solve(g, first.x, (5.0, 1.0, 0.05), "dpm_solver_v3", disable=True)
    assert torch.equal(second.x, fresh.x)
    # An EMS the user gives must cover the levels of the continuation: refused with the range and the fix.
    ems = analytic_ems(g, sigma_min=1.0, sigma_max=80.0, intervals=50)
    head = gaussport.solve(g, x, (80.0, 10.0, 1.0), "dpm_solver_v3", ems=ems, disable=True)
    with pytest.raises(
        ValueError, match=r"leave the range of the EMS \[1, 80\].*Compute EMS that cover the run"
    ):
        gaussport.solve(g, head.x, (1.0, 0.1, 0.0), "dpm_solver_v3", ems=ems, state=head.state, disable=True)


def test_corrector_schedule() -> None:
    g = anisotropic_gaussian(dim=6)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(steps: int, **options: object) -> torch.Tensor:
        sig = grids.exponential(steps + 1, 0.01, 80.0, append_zero=False)
        return gaussport.solve(g, x, sig, "dpm_solver_v3", disable=True, **options).x

    # "normal": corrector order = previous predictor order, first > 1 at the third level.
    assert torch.equal(run(2, corrector="normal"), run(2, corrector=None))
    assert not torch.equal(run(3, corrector="normal"), run(3, corrector=None))
    # "pseudo": one order more, so the second level is corrected already.
    assert not torch.equal(run(2, corrector="pseudo"), run(2, corrector=None))
    # half: correct only above the level; above every level = no corrector.
    assert torch.equal(run(8, half=100.0), run(8, corrector=None))
    assert not torch.equal(run(8, half=1.0), run(8, corrector=None))
    assert not torch.equal(run(8, half=1.0), run(8))
    # NFE is the number of steps with or without the corrector, ending in 0 or not.
    counter = CountingDenoiser(g)
    gaussport.solve(
        counter, x, grids.karras(7, 0.01, 80.0), "dpm_solver_v3", corrector="pseudo", disable=True
    )
    assert counter.calls == 7


def test_one_step_and_float32() -> None:
    g = anisotropic_gaussian(dim=4)
    x = g.sample(2, 10.0, torch.Generator().manual_seed(0), dtype=torch.float32)
    one = gaussport.solve(g, x, (10.0, 1.0), "dpm_solver_v3", disable=True)  # order reduced to 1
    ddim = (1.0 / 10.0) * x.double() + (1 - 0.1) * g(x.double(), torch.full((2,), 10.0, dtype=torch.float64))
    assert one.x.dtype == torch.float32 and _rel(one.x.double(), ddim) < 1e-6
    ems = analytic_ems(g, sigma_min=0.01, sigma_max=10.0, intervals=200)
    out = gaussport.solve(g, x, grids.karras(8, 0.01, 10.0), "dpm_solver_v3", ems=ems, disable=True)
    assert out.x.dtype == torch.float32 and bool(torch.isfinite(out.x).all())


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="solver_order must be"):
        get("dpm_solver_v3", solver_order=4)
    with pytest.raises(ValueError, match="predictor must be"):
        get("dpm_solver_v3", predictor="taylor")
    with pytest.raises(ValueError, match="corrector must be"):
        get("dpm_solver_v3", corrector="yes")
    # A bool is not a noise level: refused by its declared type (float | None), with the reference's spelling.
    with pytest.raises(TypeError, match=r"half must be a finite float or None; got True.*half=0\.5"):
        get("dpm_solver_v3", half=True)
    with pytest.raises(ValueError, match="half must be a noise level >= 0"):
        get("dpm_solver_v3", half=-1.0)
    with pytest.raises(ValueError, match="ems must be"):
        get("dpm_solver_v3", ems="analytic-please")
    with pytest.raises(ValueError, match="quadrature must be"):
        get("dpm_solver_v3", quadrature="simpson")
    with pytest.raises(TypeError, match="has no option"):
        get("dpm_solver_v3", order=3)
    assert get("dpm_solver_v3").order == 2 and get("dpm_solver_v3", solver_order=1).order == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_without_host_syncs_in_the_loop() -> None:
    g = random_gaussian([1.0, 0.1, 0.01], seed=0)
    ems = analytic_ems(g, sigma_min=0.01, sigma_max=10.0, intervals=200)
    x = g.sample(4, 10.0, torch.Generator().manual_seed(0)).cuda()

    def denoiser(xx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return g(xx, s)

    sig = grids.karras(8, 0.01, 10.0)
    solver = get("dpm_solver_v3", ems=ems)
    state = solver.init(x, sig)  # precomputation (on the CPU, moved once) happens here
    denoiser(x, torch.full((4,), 1.0, device="cuda"))  # the Gaussian copies its factors to the device once
    torch.cuda.set_sync_debug_mode("error")
    try:
        call = gaussport.DenoiserCall(denoiser, model_dtype=x.dtype, state_dtype=x.dtype)
        for i in range(len(sig) - 1):
            step = solver.step(call, x, sig, i, state)
            x, state = step.x, step.state
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert x.device.type == "cuda"
