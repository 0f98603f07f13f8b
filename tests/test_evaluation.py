"""The evaluation harness (gaussport.evaluation): budgets, exact endpoints, metrics plumbing, reports.

The harness is generic over the model: these tests use an analytic Gaussian target (an exact
denoiser, 16 dimensions), so they are cheap and need no model files. The harness on the shipped
digits model is tested in tests/digits/.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.evaluation import Evaluator, markdown_table, nfe_to_reach, save_sample_panels
from gaussport.reference import reference_solve
from gaussport.solvers import SingleEvaluationSolver, TwoStageSolver
from gaussport.testing import CountingDenoiser, anisotropic_gaussian

SEEDS = range(4)


def gaussian_evaluator(denoiser=None, **kwargs) -> Evaluator:  # type: ignore[no-untyped-def]
    """A 16-dimensional Gaussian target: the denoiser is exact, the warm start is the same Gaussian."""
    gaussian = anisotropic_gaussian(16)
    kwargs.setdefault("seeds", SEEDS)
    kwargs.setdefault("reference_steps", 2)
    return Evaluator(denoiser if denoiser is not None else gaussian, gaussian, shape=(16,), **kwargs)


# ---------------------------------------------------------------------- the NFE -> grid rule
@pytest.mark.parametrize("nfe", [2, 5, 7, 10])
def test_budget_is_the_largest_grid_within_the_nfe(solver_name: str, nfe: int) -> None:
    ev = gaussian_evaluator()
    solver = gaussport.solvers.get(solver_name)
    for teleport, skip in (("none", None), ("respace", 2.0), ("truncate", 2.0)):
        b = ev.budget(solver_name, nfe, teleport, skip)
        assert b.nfe == solver.evaluations(b.solver_grid) <= nfe
        # maximal: the next grid of the family, treated the same way, costs more than the budget
        n = len(b.grid) - 1
        bigger = ev.family(n + 1, ev.sigma_min, ev.sigma_max)
        if teleport == "respace":
            bigger = grids.respace(bigger, skip)
        elif teleport == "truncate":
            bigger = grids.truncate(bigger, skip)
        assert solver.evaluations(bigger) > nfe, (teleport, b)
        assert b.grid == ev.family(n, ev.sigma_min, ev.sigma_max)
        if teleport == "none":
            assert b.solver_grid == b.grid
        else:
            assert b.solver_grid[0] == skip and b.solver_grid[-1] == 0.0
        if isinstance(solver, SingleEvaluationSolver) and teleport != "truncate":
            assert n == nfe  # one evaluation per interval (the step to 0 is free of extra calls)
        if isinstance(solver, TwoStageSolver) and teleport != "truncate":
            assert 2 * n - 1 <= nfe < 2 * (n + 1) - 1  # the last step, to 0, is a single evaluation


def test_heun_at_nfe_7_takes_4_intervals() -> None:
    b = gaussian_evaluator().budget("heun", 7)
    assert len(b.grid) - 1 == 4 and b.nfe == 7
    assert b.grid == grids.karras(4, 0.002, 80.0)


def test_steps_take_the_family_grid_of_that_size_whatever_it_costs() -> None:
    ev = gaussian_evaluator()
    b = ev.budget("heun", steps=4)
    assert b.grid == b.solver_grid == grids.karras(4, 0.002, 80.0) and b.nfe == 7
    on_grid = b.grid[2]  # a teleport onto a level of the grid keeps the grid below it
    t = ev.budget("heun", steps=4, teleport="truncate", sigma_skip=on_grid)
    assert t.grid == b.grid and t.solver_grid == b.grid[2:] and t.nfe == 3
    r = ev.budget("heun", steps=4, teleport="respace", sigma_skip=2.0)
    assert r.solver_grid == grids.respace(b.grid, 2.0) and r.nfe == 7
    e = ev.evaluate("heun", steps=4, teleport="truncate", sigma_skip=on_grid)
    assert e.nfe == e.nfe_budget == 3 and e.grid == t.solver_grid
    for nfe, steps in ((None, None), (7, 4)):
        with pytest.raises(ValueError, match="exactly one of nfe"):
            ev.budget("heun", nfe, steps=steps)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        ev.budget("heun", steps=0)


def test_truncate_keeps_the_family_grid_below_sigma_skip() -> None:
    ev = gaussian_evaluator()
    b = ev.budget("euler", 6, "truncate", 2.0)
    assert b.solver_grid == grids.truncate(b.grid, 2.0)
    assert b.nfe == len(b.solver_grid) - 1 == 6
    assert len(b.grid) - 1 > 6  # the levels above sigma_skip cost nothing


# ---------------------------------------------------------------------- exact endpoints
def test_exact_endpoints_are_computed_once_per_seed() -> None:
    counter = CountingDenoiser(anisotropic_gaussian(16))
    ev = gaussian_evaluator(counter)
    first = ev.reference()
    calls = counter.calls
    assert calls > 0
    assert torch.equal(ev.reference(), first) and counter.calls == calls
    # a superset computes only the missing seeds; each seed's endpoint is independent of the batch
    both = ev.reference([5, 2, 4])
    assert counter.calls == 2 * calls
    assert torch.equal(both[1], first[2])
    alone = gaussian_evaluator(seeds=[4]).reference()
    # the model runs in float32 (model_dtype): a batch of 1 may round differently from a batch of 3
    torch.testing.assert_close(both[2], alone[0], rtol=1e-5, atol=1e-6)


def test_endpoint_disk_cache_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = gaussian_evaluator(cache_dir=tmp_path, fingerprint="f" * 64)
    exact = first.reference()
    assert len(list(tmp_path.glob("*.npz"))) == 1
    counter = CountingDenoiser(anisotropic_gaussian(16))
    second = gaussian_evaluator(counter, cache_dir=tmp_path, fingerprint="f" * 64)
    assert torch.equal(second.reference(), exact) and counter.calls == 0


def test_endpoint_cache_of_another_model_is_ignored_with_a_warning(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    gaussian_evaluator(cache_dir=tmp_path, fingerprint="f" * 64).reference()
    counter = CountingDenoiser(anisotropic_gaussian(16))
    # same file name (the first 16 characters), different model
    with caplog.at_level(logging.WARNING, logger="gaussport"):
        other = gaussian_evaluator(counter, cache_dir=tmp_path, fingerprint="f" * 63 + "0")
    assert "ignoring the endpoint cache" in caplog.text
    other.reference()
    assert counter.calls > 0


def test_initial_states_from_the_caller() -> None:
    """``initial_states`` replaces the per-seed noise: runs and exact endpoints start from those states."""
    gaussian = anisotropic_gaussian(16)
    states = gaussian.sample(4, 80.0, torch.Generator().manual_seed(3), dtype=torch.float64)
    ev = gaussian_evaluator(
        model_dtype=torch.float64, reference_steps=20, initial_states=lambda rows: states[list(rows)]
    )
    assert torch.equal(ev.noise(), states) and torch.equal(ev.noise([2, 0]), states[[2, 0]])
    # the closed-form endpoints of those very states: the flow to sigma_min, then x = D(x, sigma_min)
    at_min = gaussian.flow(states, 80.0, 0.002)
    exact = gaussian(at_min, torch.full((4,), 0.002, dtype=torch.float64))
    torch.testing.assert_close(ev.reference(), exact, rtol=0, atol=1e-6)
    direct = gaussport.solve(gaussian, states, grids.karras(4, 0.002, 80.0), "heun", disable=True).x
    assert torch.equal(ev.evaluate("heun", steps=4).samples, direct.float())
    with pytest.raises(ValueError, match="drop cache_dir or initial_states"):
        gaussian_evaluator(cache_dir="unused", initial_states=lambda rows: states[list(rows)])


def test_reference_to_itself_has_zero_trajectory_error() -> None:
    """A sampler that repeats the reference solve from the harness's noise lands on the cached endpoints."""
    ev = gaussian_evaluator()

    def again(denoiser, x, grid):  # type: ignore[no-untyped-def]
        return reference_solve(
            denoiser,
            x.double(),
            (80.0, 0.002, 0.0),
            steps_per_unit=ev.reference_steps,
            model_dtype=torch.float32,
        )

    e = ev.evaluate_sampler("reference", again, grids.karras(3, 0.002, 80.0))
    assert e.error == 0.0 and e.trajectory.max == 0.0
    assert e.nfe > 0


# ---------------------------------------------------------------------- evaluate, samplers, calibrate
def test_evaluate_sampler_counts_calls_and_matches_evaluate() -> None:
    ev = gaussian_evaluator()
    b = ev.budget("euler", 6)

    def euler(denoiser, x, grid):  # type: ignore[no-untyped-def]
        return gaussport.solve(denoiser, x, grid, "euler", disable=True).x

    outside = ev.evaluate_sampler("euler, as an outside sampler", euler, b.grid)
    inside = ev.evaluate("euler", 6)
    assert outside.nfe == inside.nfe == 6
    assert outside.error == pytest.approx(inside.error, rel=1e-12)

    def twice(denoiser, x, grid):  # type: ignore[no-untyped-def]
        sigma = torch.full((x.shape[0],), grid[0], dtype=x.dtype)
        denoiser(x, sigma)
        return denoiser(x, sigma)

    assert ev.evaluate_sampler("two calls", twice, b.grid).nfe == 2


def test_evaluate_recipe_is_the_truncated_run_on_the_entry_grid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gaussport.tuning import Recipe, RecipeEntry

    ev = gaussian_evaluator(denoiser=anisotropic_gaussian(16, seed=3))  # a model other than the warm start
    entry = RecipeEntry("dpmpp_2m", 4, 3.0, (3.0, 0.8, 0.1, 0.01, 0.0), {}, None)
    path = tmp_path / "recipe.json"
    Recipe(ev.sigma_max, (entry,), {}).save(path)
    got = ev.evaluate_recipe(path, "dpmpp_2m", 4)
    # the same run spelled out: the caller's grid is sigma_max then the entry's levels, truncated there
    by_hand = ev.evaluate_sampler(
        "by hand",
        lambda d, x, g: (
            gaussport.sample(
                d, x, g, "dpmpp_2m", warm_start=ev.gaussian, sigma_skip=3.0, teleport="truncate", disable=True
            ).x
        ),
        (ev.sigma_max, *entry.sigmas),
    )
    assert got.nfe == by_hand.nfe == 4 and got.teleport == "recipe" and got.sigma_skip == 3.0
    assert got.error == by_hand.error and got.grid == entry.sigmas
    with pytest.raises(ValueError, match="dpmpp_2m"):
        ev.evaluate_recipe(path, "dpmpp_2m", 6)


@pytest.mark.reference
def test_evaluate_sampler_with_k_diffusion_euler() -> None:
    sampling = pytest.importorskip("k_diffusion.sampling")
    ev = gaussian_evaluator()
    b = ev.budget("euler", 5)
    e = ev.evaluate_sampler(
        "k-diffusion euler",
        lambda d, x, g: sampling.sample_euler(d, x, torch.tensor(g), disable=True),
        b.grid,
    )
    assert e.nfe == 5  # k-diffusion calls the model at every step, including the last to 0
    assert e.error == pytest.approx(ev.evaluate("euler", 5).error, rel=1e-5)


def test_teleport_on_a_gaussian_target_is_exact_above_sigma_skip() -> None:
    """With the Gaussian itself as the model the warm start is the exact flow: the harness's sample
    is the solver run below sigma_skip from the exact state there, and its error is measured against
    the harness's own exact endpoints; with the same NFE on a shorter range it beats no teleport."""
    ev = gaussian_evaluator()
    g = ev.gaussian
    plain = ev.evaluate("heun", 7)
    warm = ev.evaluate("heun", 7, teleport="respace", sigma_skip=1.0)
    assert warm.nfe == plain.nfe == 7 and warm.sigma_skip == 1.0 and warm.grid[0] == 1.0
    # Independently: the exact flow to sigma_skip = 1 (closed form), then Heun on the solver's grid.
    x_skip = g.flow(ev.noise().double(), ev.sigma_max, 1.0)
    below = gaussport.solve(g, x_skip, warm.grid, "heun", disable=True).x
    assert torch.allclose(warm.samples.double(), below, rtol=1e-5, atol=1e-5)  # float32 samples
    # The error is the RMS distance to the harness's endpoints, which approximate the exact ones
    # (the Gaussian's flow to 0) to the accuracy of 2 RK4 steps per unit with a float32 model.
    exact = g.flow(ev.noise().double(), ev.sigma_max, 0.0)
    assert torch.allclose(ev.reference(), exact, rtol=0, atol=1e-2)
    rms = float((warm.samples.double() - ev.reference()).pow(2).mean().sqrt())
    assert warm.error == pytest.approx(rms, rel=1e-6)
    assert warm.error < plain.error


def test_calibrate_picks_the_candidate_with_the_lowest_error() -> None:
    ev = gaussian_evaluator()
    candidates = [0.5, 2.0, 10.0, 40.0]
    cal = ev.calibrate("euler", 4, candidates, seeds=[10, 11])
    assert set(cal.errors) == set(candidates)
    for c in candidates:
        assert (
            cal.errors[c] == ev.evaluate("euler", 4, teleport="respace", sigma_skip=c, seeds=[10, 11]).error
        )
    assert cal.errors[cal.best] == min(cal.errors.values())
    assert len(set(cal.errors.values())) == len(candidates)  # no tie: the minimum is the pick


# ---------------------------------------------------------------------- nfe_to_reach
def test_nfe_to_reach_interpolates_log_log() -> None:
    # errors 1 at NFE 4, 1/4 at NFE 8: error ~ NFE^-2, so 1/2 is reached at 4 * sqrt(2)
    assert nfe_to_reach([4, 8], [1.0, 0.25], 0.5) == pytest.approx(4 * math.sqrt(2), rel=1e-12)
    assert nfe_to_reach([8, 4], [0.25, 1.0], 0.5) == pytest.approx(4 * math.sqrt(2), rel=1e-12)  # any order
    assert nfe_to_reach([4, 8], [0.3, 0.1], 0.5) == 4.0  # already there at the first NFE
    assert nfe_to_reach([4, 8], [1.0, 0.6], 0.5) == math.inf  # never
    assert nfe_to_reach([4, 6, 8], [1.0, math.nan, 0.25], 0.5) == pytest.approx(4 * math.sqrt(2))
    assert nfe_to_reach([4, 8], [1.0, 0.5], 0.5) == pytest.approx(8.0)  # reached exactly at a point


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("teleport", "skip", "message"),
    [
        ("jump", 2.0, "teleport must be one of"),
        ("respace", None, "needs sigma_skip"),
        ("truncate", None, "needs sigma_skip"),
        ("none", 2.0, "sigma_skip was given with teleport='none'"),
        ("respace", 0.001, "must lie in"),
        ("respace", 0.002, "must lie in"),
        ("truncate", 100.0, "must lie in"),
    ],
)
def test_bad_teleport_settings_are_named(teleport: str, skip: float | None, message: str) -> None:
    ev = gaussian_evaluator()
    with pytest.raises(ValueError, match=message):
        ev.budget("heun", 7, teleport, skip)
    with pytest.raises(ValueError, match=message):
        ev.evaluate("heun", 7, teleport=teleport, sigma_skip=skip)


@pytest.mark.parametrize("nfe", [0, -3, 2.5, True])
def test_bad_nfe_is_named(nfe: object) -> None:
    with pytest.raises(ValueError, match="nfe must be a positive integer"):
        gaussian_evaluator().budget("heun", nfe)  # type: ignore[arg-type]


def test_bad_evaluator_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="seeds is empty"):
        gaussian_evaluator(seeds=[])
    with pytest.raises(ValueError, match="repeats"):
        gaussian_evaluator(seeds=[1, 1])
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        gaussian_evaluator(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="reference_steps"):
        gaussian_evaluator(reference_steps=0)
    with pytest.raises(ValueError, match="no Frechet metric"):
        gaussian_evaluator().evaluate("euler", 3, frechet=True)
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        gaussian_evaluator().evaluate("nope", 3)


# ---------------------------------------------------------------------- reports
def test_markdown_table_formats_floats_to_three_digits() -> None:
    table = markdown_table(
        ["a", "b", "c", "d"], [[1, 0.123456, 1.5e-5, math.inf], ["x", 12345.0, math.nan, 0.0]]
    )
    assert table.splitlines() == [
        "| a | b | c | d |",
        "|---|---|---|---|",
        "| 1 | 0.123 | 1.50e-05 | inf |",
        "| x | 1.23e+04 | - | 0 |",
    ]


def test_sample_panels_take_any_image_size_and_one_or_three_channels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    from gaussport.evaluation.reporting import SEPARATOR, _image_grid

    gen = torch.Generator().manual_seed(0)
    gray = torch.rand(5, 1, 6, 4, generator=gen) * 2 - 1
    rgb = torch.rand(3, 3, 5, 5, generator=gen) * 2 - 1
    grid = _image_grid(gray, columns=2)
    assert grid.shape == (3 * 7 + 1, 2 * 5 + 1)  # 3 rows of 2, 1-pixel separators around each image
    np.testing.assert_array_equal(grid[1:7, 6:10], gray[1, 0].numpy())  # image 1: row 0, column 1
    assert (grid[0] == SEPARATOR).all() and (grid[15:21, 6:10] == SEPARATOR).all()  # no image 5
    colour = _image_grid(rgb, columns=4)
    assert colour.shape == (7, 4 * 6 + 1, 3)
    np.testing.assert_array_equal(colour[1:6, 13:18], rgb[2].permute(1, 2, 0).numpy())
    for panels in ([("gray", gray)], [("rgb", rgb), ("flat", gray[:, 0])]):
        path = tmp_path / f"{len(panels)}.png"
        assert save_sample_panels(panels, path, title="t") and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_sample_panels([("two channels", torch.zeros(2, 2, 4, 4))], tmp_path / "bad.png")
