"""Multistep solvers: local orders with exact history, algebraic identities, edge cases, state, seeding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport import grids, testing
from gaussport.solvers import Teleport
from gaussport.solvers._multistep import seed_levels, step_order

MULTISTEP = (
    "ddim",
    "dpmpp_2m",
    "dpmpp_2m_taylor",
    "dpmpp_3m",
    "dpmpp_3m_fixed",
    "unipc_bh1",
    "unipc_bh2",
    "unipc_vary_coeff",
    "ipndm",
    "ipndm_v",
)


def _corrected(state: object) -> torch.Tensor:
    return state.x_prev  # type: ignore[attr-defined]


# (name, options, expected local slope): the table and derivations of
# docs/devdocs-derivations.md#local-slopes-with-exact-history. Global order = local slope - 1.
LOCAL = [
    ("ddim", {}, 2),
    ("dpmpp_2m", {}, 3),
    ("dpmpp_2m_taylor", {}, 3),
    ("dpmpp_3m", {}, 3),  # published 3M: the halved phi_3 term leaves it second order
    ("dpmpp_3m_fixed", {}, 4),
    ("ipndm", {}, 5),  # history seeded at equal sigma steps: the fixed AB4 coefficients are exact
    ("ipndm_v", {}, 5),
    ("ipndm_v", {"adams_bashforth": 3}, 4),
] + [
    (f"unipc_{variant}", {"solver_order": p, "corrector": corrector}, p + 1 + corrector)
    for variant in ("bh1", "bh2", "vary_coeff")
    for p in (1, 2, 3)
    for corrector in (False, True)
]


@pytest.mark.parametrize(("name", "options", "expected"), LOCAL, ids=[f"{n}-{o}" for n, o, _ in LOCAL])
def test_local_order_with_exact_history(name: str, options: dict, expected: int) -> None:
    solver = gaussport.solvers.get(name, lower_order_final=False, **options)
    corrected = _corrected if options.get("corrector") else None
    for sigma, h in ((1.0, 0.4), (0.2, 0.4)):
        slope = testing.measured_local_order(solver, sigma=sigma, h=h, corrected=corrected)
        assert abs(slope - expected) < 0.3, f"{name} {options}: local slope {slope:.2f}, expected {expected}"


def test_local_order_can_fail() -> None:
    # The published 3M measured against the corrected one's expectation must fail by a wide margin.
    assert testing.measured_local_order("dpmpp_3m") < 3.3
    assert testing.measured_local_order("dpmpp_3m_fixed") > 3.7


# ---------------------------------------------------------------------------- identities


def _run(name: str, sigmas: tuple[float, ...], **options: object) -> torch.Tensor:
    mixture = gaussport.analytic.anisotropic_mixture(dim=6, n_components=3, seed=4)  # nonlinear denoiser
    x = mixture.sample(3, sigmas[0], torch.Generator().manual_seed(1), dtype=torch.float64)
    return gaussport.solve(mixture, x, sigmas, name, disable=True, **options).x


KARRAS, LOGSNR = grids.karras(9, 0.01, 20.0), grids.exponential(7, 0.05, 5.0, append_zero=False)
UNIFORM_SIGMA = tuple(12.0 - 1.5 * k for k in range(8))  # equal steps in sigma

IDENTITIES = [
    # UniP-2 with B(h) = e^{-h} - 1 is DPM-Solver++(2M) ('dpmsolver' type):
    # docs/devdocs-derivations.md#unipc-bh-cancels-wherever-the-coefficients-come-from-a-linear-solve.
    (("unipc_bh2", {"solver_order": 2, "corrector": False}), ("dpmpp_2m", {}), (KARRAS, LOGSNR)),
    # UniP-1 and iPNDM of order 1 are DDIM and Euler.
    (("unipc_bh1", {"solver_order": 1, "corrector": False}), ("ddim", {}), (KARRAS, LOGSNR)),
    (("ipndm", {"adams_bashforth": 1}), ("euler", {}), (KARRAS, LOGSNR)),
    # Fixed vary_coeff never hard-codes rho = 1/2, so UniP-p is exponential Adams-Bashforth: the
    # Taylor 2M and the corrected 3M (B(h) cancels out of every linear solve).
    (
        ("unipc_vary_coeff", {"solver_order": 2, "corrector": False}),
        ("dpmpp_2m_taylor", {}),
        (KARRAS, LOGSNR),
    ),
    (("unipc_vary_coeff", {"solver_order": 3, "corrector": False}), ("dpmpp_3m_fixed", {}), (KARRAS, LOGSNR)),
    # UniP-3 with bh2 warms up with the midpoint 2M step, then is exponential AB3 as well.
    (
        ("unipc_bh2", {"solver_order": 3, "corrector": False}),
        ("dpmpp_3m_fixed", {"solver_type": "midpoint"}),
        (KARRAS, LOGSNR),
    ),
    # Equal steps in sigma: the variable-step Adams-Bashforth coefficients are the fixed ones.
    (("ipndm_v", {}), ("ipndm", {}), (UNIFORM_SIGMA,)),
]


@pytest.mark.parametrize(
    ("left", "right", "grid_list"), IDENTITIES, ids=[f"{a[0]}={b[0]}" for a, b, _ in IDENTITIES]
)
def test_algebraic_identities(left: tuple[str, dict], right: tuple[str, dict], grid_list: tuple) -> None:
    for sigmas in grid_list:
        a = _run(left[0], sigmas, lower_order_final=False, **left[1])
        b = _run(
            right[0], sigmas, **({"lower_order_final": False} if right[0] != "euler" else {}), **right[1]
        )
        assert float((a - b).norm() / b.norm()) < 1e-13, f"{left} != {right} on {sigmas}"


def test_ipndm_variable_step_differs_from_fixed_on_non_uniform_grids() -> None:
    sigmas = grids.karras(9, 0.01, 20.0)
    a, b = _run("ipndm_v", sigmas), _run("ipndm", sigmas)
    assert float((a - b).norm() / b.norm()) > 1e-4


def test_bh_variants_differ_only_in_hard_coded_steps() -> None:
    # With exact-phi linear solves everywhere B(h) cancels; bh1 and bh2 differ through UniP-2 / UniC-1
    # only, which a run of order 3 with a corrector uses during warm-up
    # (docs/devdocs-derivations.md#unipc-bh-cancels-wherever-the-coefficients-come-from-a-linear-solve).
    sigmas = grids.karras(9, 0.01, 20.0)
    bh1, bh2 = _run("unipc_bh1", sigmas, solver_order=3), _run("unipc_bh2", sigmas, solver_order=3)
    assert float((bh1 - bh2).norm() / bh2.norm()) > 1e-6


# ---------------------------------------------------------------------------- final step, grids, edge cases

ALL_OPTIONS = [
    (name, options)
    for name in MULTISTEP
    for options in ({"lower_order_final": False}, {"lower_order_final": True})
] + [
    (f"unipc_{v}", {"solver_order": p, "corrector": c, "lower_order_final": lof})
    for v in ("bh1", "bh2", "vary_coeff")
    for p in (1, 2, 3, 4)
    for c in (False, True)
    for lof in (False, True)
]


@pytest.mark.parametrize(("name", "options"), ALL_OPTIONS, ids=[f"{n}-{o}" for n, o in ALL_OPTIONS])
def test_final_step_to_zero_is_finite_and_the_exact_limit(name: str, options: dict) -> None:
    """Ending in 0 gives x = D(x, sigma_last) with no extra evaluation, for every option.

    diffusers' UniPC gives NaN there for bh1 and for bh2 without lower_order_final
    (tests/reference/test_diffusers_multistep.py); the exact limit of every first-order update is D.
    """
    mixture = gaussport.analytic.anisotropic_mixture(dim=5, n_components=3, seed=3)
    for sigmas in (
        grids.karras(6, 0.002, 80.0),
        (80.0, 1e-3, 0.0),
        (50.0, 0.0),
        grids.exponential(3, 1e-8, 2.0),
    ):
        x = mixture.sample(2, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
        counter = testing.CountingDenoiser(mixture)
        seen: list[gaussport.StepInfo] = []
        sol = gaussport.solve(counter, x, sigmas, name, disable=True, callback=seen.append, **options)
        assert bool(torch.isfinite(sol.x).all())
        assert sol.nfe == counter.calls == len(sigmas) - 1
        last = mixture(seen[-1].x, torch.full((2,), sigmas[-2], dtype=torch.float64))
        assert torch.equal(sol.x, last)


@settings(max_examples=25, deadline=None)
@given(grid=testing.sigma_grids(1, 10, end_in_zero=False), name=st.sampled_from(MULTISTEP))
def test_grids_ending_above_zero(grid: tuple[float, ...], name: str) -> None:
    """A last level above zero is an ordinary level: a run over G stops exactly at the state a longer
    run passes through there (no final ``x = D``, no order lowered, one evaluation per interval).

    Their accuracy is measured as convergence order on grids ending above zero (test_order.py). No
    error bound holds on every grid of this strategy: after a tiny step, a 20 x longer one makes a
    variable-step multistep method extrapolate far outside its nodes (unipc_vary_coeff: relative
    error 1.2 on ratios (2.9, 1.53, 3.64, 1.06, 1.67, 4.0, 2.9, 1.21, 1.28) from sigma 5.17).
    """
    g = testing.anisotropic_gaussian(dim=4)
    x = g.sample(2, grid[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    default = gaussport.solve(g, x, grid, name, disable=True)  # with the registered lower_order_final
    assert default.nfe == len(grid) - 1 and bool(torch.isfinite(default.x).all())
    sol = gaussport.solve(g, x, grid, name, disable=True, lower_order_final=False)
    assert sol.nfe == len(grid) - 1
    seen: list[gaussport.StepInfo] = []
    longer = grid + (grid[-1] / 2.0, 0.0)
    gaussport.solve(g, x, longer, name, disable=True, lower_order_final=False, callback=seen.append)
    passing = seen[len(grid) - 1]  # the step that starts at grid[-1]
    assert passing.sigma == grid[-1] and torch.equal(passing.x, sol.x)


@pytest.mark.parametrize("name", MULTISTEP)
def test_one_step_is_first_order(name: str) -> None:
    # steps = 1 with empty history: the multistep solvers reduce to their first-order update
    # (DDIM for the exponential integrators, Euler for iPNDM) -- no assert as in dpm-solver/UniPC.
    sigmas = (3.0, 1.1)
    reference = "euler" if name.startswith("ipndm") else "ddim"
    a, b = _run(name, sigmas), _run(reference, sigmas)
    assert float((a - b).norm() / b.norm()) < 1e-15


@pytest.mark.parametrize("name", MULTISTEP)
def test_single_level_grid_is_a_no_op(name: str) -> None:
    g = testing.anisotropic_gaussian(dim=4)
    x = g.sample(2, 2.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = gaussport.solve(g, x, (2.0,), name, disable=True)
    assert sol.nfe == 0 and torch.equal(sol.x, x)


def test_repeated_levels_are_rejected() -> None:
    g = testing.anisotropic_gaussian(dim=4)
    x = g.sample(2, 2.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        gaussport.solve(g, x, (2.0, 1.0, 1.0, 0.5), "dpmpp_3m", disable=True)


@pytest.mark.parametrize("name", [n for n in MULTISTEP if n != "ddim"])  # ddim keeps no history
def test_state_from_another_trajectory_is_rejected(name: str) -> None:
    g = testing.anisotropic_gaussian(dim=4)
    x = g.sample(2, 5.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    first = gaussport.solve(g, x, (5.0, 2.0, 1.0), name, disable=True)
    with pytest.raises(ValueError, match="state= must come from the run ending"):
        gaussport.solve(g, first.x, (3.0, 0.5), name, disable=True, state=first.state)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("dpmpp_2m", {"solver_order": 4}, "solver_order must be 1, 2 or 3"),
        ("dpmpp_2m", {"solver_type": "heun"}, "solver_type must be one of"),
        ("dpmpp_3m", {"third_order": "fixed"}, "third_order must be one of"),
        ("unipc_bh1", {"variant": "bh3"}, "variant must be one of"),
        ("unipc_bh1", {"solver_order": 0}, "solver_order must be 1, 2, 3 or 4"),
        ("ipndm", {"adams_bashforth": 5}, "adams_bashforth must be 1, 2, 3 or 4"),
        ("dpmpp_2s", {"r": 0.0}, "r must lie in"),
    ],
)
def test_bad_options_are_explained(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gaussport.solvers.get(name, **options)


# ---------------------------------------------------------------------------- orders per step


def test_step_order_rule() -> None:
    grid = (8.0, 4.0, 2.0, 1.0, 0.5, 0.0)  # 5 intervals
    warm_up = [step_order(3, min(i, 2), grid, i, False) for i in range(5)]
    assert warm_up == [1, 2, 3, 3, 3]
    lowered = [step_order(3, min(i, 2), grid, i, True) for i in range(5)]
    assert lowered == [1, 2, 3, 2, 1]  # min(order, stored + 1, intervals left): UniPC/diffusers rule
    assert [step_order(3, 2, grid, i, False) for i in range(5)] == [3] * 5  # seeded history: no warm-up


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m_fixed", "unipc_bh2", "ipndm_v"])
def test_lower_order_final_counts_the_intervals_of_the_run(name: str) -> None:
    # Run G with lower_order_final, or G[:-1] without and then the last interval alone (as a run of
    # one interval: first order): the documented rule makes the two identical for solver_order 2;
    # for higher orders the rule also lowers the second-to-last step, so they differ.
    g = testing.anisotropic_gaussian(dim=4)
    sigmas = grids.exponential(8, 0.05, 5.0, append_zero=False)
    x = g.sample(2, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    full = gaussport.solve(g, x, sigmas, name, disable=True, lower_order_final=True).x
    head = gaussport.solve(g, x, sigmas[:-1], name, disable=True, lower_order_final=False)
    tail = gaussport.solve(
        g, head.x, sigmas[-2:], name, disable=True, lower_order_final=True, state=head.state
    ).x
    plain = gaussport.solve(g, x, sigmas, name, disable=True, lower_order_final=False).x
    assert not torch.equal(full, plain)
    if testing.values_combined(gaussport.solvers.get(name)) == 2:
        assert torch.allclose(full, tail, rtol=1e-14, atol=0)
    else:
        assert not torch.allclose(full, tail, rtol=1e-12, atol=0)


@settings(max_examples=20, deadline=None)
@given(grid=testing.sigma_grids(2, 10), name=st.sampled_from(MULTISTEP), data=st.data())
def test_state_threading_resumes_a_run(grid: tuple[float, ...], name: str, data: st.DataObject) -> None:
    """solve(G) == solve(G[:k]) then solve(G[k-1:], state=...) (without lower_order_final)."""
    k = data.draw(st.integers(2, len(grid) - 1))
    mixture = gaussport.analytic.anisotropic_mixture(dim=4, n_components=2, seed=5)
    x = mixture.sample(2, grid[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = gaussport.solve(mixture, x, grid, name, disable=True, lower_order_final=False)
    first = gaussport.solve(mixture, x, grid[:k], name, disable=True, lower_order_final=False)
    second = gaussport.solve(
        mixture, first.x, grid[k - 1 :], name, disable=True, lower_order_final=False, state=first.state
    )
    assert torch.allclose(second.x, whole.x, rtol=1e-13, atol=1e-13)
    assert first.nfe + second.nfe == whole.nfe


# ---------------------------------------------------------------------------- seeded history


def test_seed_levels_continue_the_first_step_upwards() -> None:
    levels = seed_levels((2.0, 1.0, 0.3), 2)
    assert levels == pytest.approx((8.0, 4.0), rel=1e-15)
    assert seed_levels((2.0, 1.0, 0.3), 2, "sigma") == pytest.approx((4.0, 3.0), rel=1e-15)
    assert seed_levels((2.0, 0.0), 2) == ()  # a single step to 0 needs no history
    assert seed_levels((2.0,), 2) == ()


@pytest.mark.parametrize("name", [n for n in MULTISTEP if n != "ddim"])
def test_seeded_history_is_the_gaussian_path(name: str) -> None:
    g = testing.anisotropic_gaussian(dim=4)
    sigmas = (2.0, 1.0, 0.5)
    x = g.sample(2, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = gaussport.solvers.get(name, seed_history=True)
    state = solver.init(x, sigmas, Teleport(g, 20.0, g.flow(x, 2.0, 20.0), 2.0))
    hist = state.history if hasattr(state, "history") else state
    assert len(hist) == testing.values_combined(solver) - 1
    for sigma in hist.sigmas:
        x_j = g.flow(x, 2.0, sigma)
        expected = g(x_j, torch.full((2,), sigma, dtype=torch.float64))
        if hasattr(hist, "slopes"):
            expected = (x_j - expected) / sigma
            value = hist.slopes[hist.sigmas.index(sigma)]
        else:
            value = hist.denoised[hist.sigmas.index(sigma)]
        assert torch.allclose(value, expected, rtol=1e-12, atol=1e-12)
    assert getattr(state, "x_prev", None) is None  # the teleported start is not corrected


@pytest.mark.parametrize("name", MULTISTEP)
def test_seed_history_without_warm_start_is_a_cold_start(name: str) -> None:
    sigmas = grids.karras(6, 0.01, 10.0)
    assert torch.equal(_run(name, sigmas, seed_history=True), _run(name, sigmas))


def test_seed_history_needs_a_flow_map() -> None:
    solver = gaussport.solvers.get("dpmpp_3m_fixed", seed_history=True)
    x = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="flow"):
        solver.init(x, (2.0, 1.0), Teleport(lambda x, s: x, 5.0, x, 2.0))


def test_seeded_history_lifts_cold_start_order() -> None:
    # The order tests measure it on every solver; here the point of the option in one line:
    # exact seeding makes the corrected 3M third order where the cold start is second order.
    # Log-SNR grids of 16..512 steps: the asymptotic range (tests/solvers/test_order.py).
    steps = (16, 32, 64, 128, 256, 512)
    cold = testing.measured_order("dpmpp_3m_fixed", history="cold", steps=steps)
    exact = testing.measured_order("dpmpp_3m_fixed", history="exact", steps=steps)
    assert abs(cold - 2) < 0.3 and abs(exact - 3) < 0.3


def test_exact_history_state_rejects_solvers_without_seeding() -> None:
    g = testing.anisotropic_gaussian(dim=4)
    with pytest.raises(TypeError, match="seed_history"):
        testing.exact_history_state(gaussport.solvers.get("heun"), g, torch.zeros(1, 16), (2.0, 1.0))


# ---------------------------------------------------------------------------- warm start through sample()


@pytest.fixture(scope="module")
def warm_problem() -> dict:
    mixture = gaussport.analytic.anisotropic_mixture(dim=6, n_components=3, seed=6)
    sigmas = grids.karras(10, 0.01, 40.0)
    x = mixture.sample(3, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = gaussport.reference_solve(mixture, x, sigmas, steps_per_unit=20)
    return {"mixture": mixture, "gaussian": mixture.moments(), "sigmas": sigmas, "x": x, "exact": exact}


def test_sample_with_warm_start_works_for_every_solver(solver_name: str, warm_problem: dict) -> None:
    p = warm_problem
    options = {"seed_history": True} if testing.supports_seeding(gaussport.solvers.get(solver_name)) else {}
    for mode in ("truncate", "respace"):
        sol = gaussport.sample(
            p["mixture"],
            p["x"],
            p["sigmas"],
            solver_name,
            warm_start=p["gaussian"],
            sigma_skip=p["sigmas"][3],
            teleport=mode,
            disable=True,
            **options,
        )
        assert bool(torch.isfinite(sol.x).all())
        assert sol.nfe == gaussport.solvers.get(solver_name).evaluations(sol.sigmas)
        assert float((sol.x - p["exact"]).norm() / p["exact"].norm()) < 0.2


def test_seeded_history_changes_only_the_warm_up() -> None:
    # Seeded and cold runs differ only in the history of the first solver_order - 1 steps.
    mixture = gaussport.analytic.anisotropic_mixture(dim=6, n_components=3, seed=6)
    gaussian = mixture.moments()
    sigmas = grids.karras(12, 0.01, 40.0)
    x = mixture.sample(3, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    runs = [
        gaussport.sample(
            mixture,
            x,
            sigmas,
            "dpmpp_3m_fixed",
            warm_start=gaussian,
            sigma_skip=8.0,
            teleport="respace",
            disable=True,
            seed_history=seed,
        )
        for seed in (False, True)
    ]
    assert runs[0].nfe == runs[1].nfe == len(runs[0].sigmas) - 1
    diff = float((runs[0].x - runs[1].x).norm() / runs[1].x.norm())
    assert 0 < diff < 0.1
