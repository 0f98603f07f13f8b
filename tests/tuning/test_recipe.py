"""Tuned sampling recipes: the file (round trip, validation, lookup) and ``tune`` on an exact target."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport import grids
from gaussport.analytic import Gaussian, GaussianMixture
from gaussport.tuning import Recipe, RecipeEntry, load_recipe, tune
from gaussport.tuning.tune import _decode, _encode, _levels_for

SIGMA_MAX = 80.0


def _entry(solver: str = "dpmpp_2m", nfe: int = 3, skip: float = 1.5) -> RecipeEntry:
    n = _levels_for(gaussport.solvers.get(solver), nfe)
    grid = (skip, skip / 3.0, skip / 20.0)[:n] if n <= 3 else tuple(skip * 0.5**k for k in range(n))
    return RecipeEntry(solver, nfe, skip, (*grid, 0.0), {}, 0.125)


def _recipe() -> Recipe:
    return Recipe(
        SIGMA_MAX,
        (_entry(), _entry("ipndm", 4, 2.0), _entry("heun", 3, 0.7)),
        {"model": "abc", "tuning_seeds": [[10000, 10031]]},
    )


def test_save_load_round_trip_is_exact(tmp_path):
    recipe = _recipe()
    path = tmp_path / "r.json"
    recipe.save(path)
    loaded = Recipe.load(path)
    assert loaded == recipe
    assert loaded.entries[0].sigmas == recipe.entries[0].sigmas  # floats survive JSON bit for bit
    assert load_recipe(path) == recipe and load_recipe(recipe) is recipe
    assert json.loads(path.read_text())["gaussport_format"] == "gaussport.recipe"


def test_entry_is_an_exact_match_and_names_what_exists():
    recipe = _recipe()
    assert recipe.entry("ipndm", 4).sigma_skip == 2.0
    with pytest.raises(ValueError, match=r"ipndm at NFE 4") as info:
        recipe.entry("ipndm", 5)
    assert "NFE 5" in str(info.value)
    with pytest.raises(ValueError, match=r"dpmpp_2m, heun, ipndm"):
        recipe.entry("unipc_bh2", 4)


def test_heun_cost_is_checked_against_its_two_evaluations_per_step():
    # Heun: n steps to 0 cost 2n - 1 evaluations, so 3 positive levels (3 steps) cost 5, not 3.
    with pytest.raises(ValueError, match=r"costs 5 evaluations with heun, not nfe = 3"):
        RecipeEntry("heun", 3, 1.0, (1.0, 0.5, 0.1, 0.0), {})
    assert _levels_for(gaussport.solvers.get("heun"), 5) == 3
    assert _levels_for(gaussport.solvers.get("heun"), 4) is None
    assert _levels_for(gaussport.solvers.get("dpmpp_2m"), 4) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(sigmas=[1.5, 0.5, 0.5, 0.0]), "strictly decreasing"),
        (lambda e: e.update(sigmas=[2.0, 0.5, 0.1, 0.0]), "must start at sigma_skip"),
        (lambda e: e.update(solver="no_such_solver"), "unknown solver"),
        (lambda e: e.update(nfe=4), "not nfe = 4"),
        (lambda e: e.update(sigma_skip="1.5"), "must be a number"),
        (lambda e: e.update(options={"solver_order": "2"}), "options do not build"),
        (lambda e: e.pop("sigmas"), r"lacks \['sigmas'\]"),
        (lambda e: e.update(extra=1), "unknown fields"),
    ],
)
def test_load_names_the_file_and_the_problem(tmp_path, change, message):
    data = _recipe().to_json()
    change(data["entries"][0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
        Recipe.load(path)
    assert "bad.json" in str(info.value)


def test_load_refuses_nan_and_foreign_files(tmp_path):
    path = tmp_path / "r.json"
    text = json.dumps(_recipe().to_json()).replace("0.125", "NaN", 1)
    path.write_text(text)
    with pytest.raises(ValueError, match="NaN"):
        Recipe.load(path)
    path.write_text(json.dumps({"gaussport_format": "something.else", "version": 1}))
    with pytest.raises(ValueError, match="gaussport_format"):
        Recipe.load(path)
    path.write_bytes(b"\x80\x04not json")
    with pytest.raises(ValueError, match="not JSON"):
        Recipe.load(path)
    with pytest.raises(FileNotFoundError, match="gaussport tune"):
        Recipe.load(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="Recipe or the path"):
        load_recipe(3)


def test_recipe_refuses_duplicates_and_teleports_above_sigma_max():
    with pytest.raises(ValueError, match="two entries"):
        Recipe(SIGMA_MAX, (_entry(), _entry()), {})
    with pytest.raises(ValueError, match="above sigma_max"):
        Recipe(1.0, (_entry(),), {})
    with pytest.raises(ValueError, match="finite"):
        Recipe(SIGMA_MAX, (_entry(),), {"x": math.inf})


@settings(max_examples=15)
@given(st.lists(st.floats(-6.0, 6.0), min_size=1, max_size=8))
def test_free_parameterisation_gives_strictly_decreasing_grids(theta):
    grid = _decode(theta, SIGMA_MAX)
    assert grid[-1] == 0.0 and grid[0] <= SIGMA_MAX
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    # Decoding the encoding of a decoded grid gives it back (up to the 6 digits a recipe stores).
    again = _decode(_encode(grid), SIGMA_MAX)
    assert again == pytest.approx(grid, rel=1e-4)


def _mixture_target() -> tuple[GaussianMixture, Gaussian]:
    """A two-component mixture in 3-D (an exact denoiser) and its moment-matched Gaussian."""
    means = torch.tensor([[1.0, 0.0, -0.5], [-1.0, 0.3, 0.5]], dtype=torch.float64)
    covs = [torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.05, 0.2, 0.01], [0.1, 0.02, 0.3])]
    mixture = GaussianMixture([Gaussian(m, c) for m, c in zip(means, covs, strict=True)])
    mean = means.mean(0)
    cov = sum(c + torch.outer(m, m) for m, c in zip(means, covs, strict=True)) / 2 - torch.outer(mean, mean)
    return mixture, Gaussian(mean, cov)


@pytest.mark.slow
def test_tune_on_an_exact_target_matches_an_independent_evaluation():
    mixture, gaussian = _mixture_target()
    kwargs = dict(
        shape=(3,),
        solvers=["dpmpp_2m", "heun"],
        nfes=[3, 4],
        seeds=range(10_000, 10_008),
        validation_seeds=range(20_000, 20_004),
        levels=(0.5, 2.0),
        rhos=(3.0, 7.0),
        max_evaluations=12,
        reference_steps=20,
        dtype=torch.float64,
        disable=True,
    )
    recipe = tune(mixture, gaussian, **kwargs)
    assert recipe.entries == tune(mixture, gaussian, **kwargs).entries  # deterministic
    # Heun cannot spend 4 evaluations exactly: skipped.
    assert recipe.cells == (("dpmpp_2m", 3), ("dpmpp_2m", 4), ("heun", 3))
    seeds = list(range(10_000, 10_008))
    x = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = (SIGMA_MAX * x).to(torch.float64)
    exact = gaussport.reference_solve(mixture, x, (SIGMA_MAX, 0.002, 0.0), steps_per_unit=20)
    for entry in recipe.entries:
        solver = gaussport.solvers.get(entry.solver)
        assert solver.evaluations(entry.sigmas) == entry.nfe
        sol = gaussport.sample(
            mixture,
            x,
            (SIGMA_MAX, *entry.sigmas),
            entry.solver,
            warm_start=gaussian,
            sigma_skip=entry.sigma_skip,
            disable=True,
        )
        assert sol.nfe == entry.nfe
        rms = float((sol.x - exact).square().mean().sqrt())
        assert entry.error == pytest.approx(rms, rel=1e-9)
        # The family search is the best of the candidate Karras grids, evaluated here independently.
        n = len(entry.sigmas) - 1
        candidates = []
        for level in (0.5, 2.0, SIGMA_MAX):
            for rho in (3.0, 7.0):
                grid = grids.karras(n, 0.002, level, rho)
                if level == SIGMA_MAX:
                    out = gaussport.solve(mixture, x, grid, entry.solver, disable=True).x
                else:
                    out = gaussport.sample(
                        mixture, x, (SIGMA_MAX, *grid), entry.solver, warm_start=gaussian,
                        sigma_skip=level, disable=True,
                    ).x  # fmt: skip
                candidates.append(float((out - exact).square().mean().sqrt()))
        cell = recipe.provenance["cells"][f"{entry.solver}@{entry.nfe}"]
        assert cell["family"]["error"] == pytest.approx(min(candidates), rel=1e-4)
        assert entry.error <= cell["family"]["error"]
    assert (
        recipe.provenance["reference"]["nfe_per_seed"] == 4 * math.ceil(20 * math.log(SIGMA_MAX / 0.002)) + 1
    )


def test_tune_refuses_overlapping_seeds_and_unknown_names():
    mixture, gaussian = _mixture_target()
    common = dict(shape=(3,), nfes=[3], disable=True)
    with pytest.raises(ValueError, match="disjoint"):
        tune(mixture, gaussian, solvers=["dpmpp_2m"], seeds=[1, 2], validation_seeds=[2], **common)
    with pytest.raises(ValueError, match="unknown solver"):
        tune(mixture, gaussian, solvers=["nope"], seeds=[1], **common)
    with pytest.raises(ValueError, match="method"):
        tune(mixture, gaussian, solvers=["dpmpp_2m"], seeds=[1], method="grid", **common)
    with pytest.raises(ValueError, match="guard_margin"):
        tune(mixture, gaussian, solvers=["dpmpp_2m"], seeds=[1], guard_margin=1.0, **common)


def _refined_by_hand(grid: tuple[float, ...], levels: int) -> tuple[float, ...]:
    """``grid`` with geometric midpoints (6 digits) in its largest log-sigma gaps until it has ``levels``
    positive levels: written out here apart from ``tune``'s own refinement."""
    positive = list(grid[:-1])
    while len(positive) < levels:
        ratios = [a / b for a, b in zip(positive, positive[1:], strict=False)]
        i = ratios.index(max(ratios))
        positive.insert(i + 1, float(f"{(positive[i] * positive[i + 1]) ** 0.5:.6g}"))
    return (*positive, 0.0)


def _rms_to_exact(target, gaussian, seeds, grid, solver="dpmpp_2m"):
    x = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = (SIGMA_MAX * x).to(torch.float64)
    exact = gaussport.reference_solve(target, x, (SIGMA_MAX, 0.002, 0.0), steps_per_unit=8)
    out = gaussport.sample(
        target, x, (SIGMA_MAX, *grid), solver, warm_start=gaussian, sigma_skip=grid[0], disable=True
    ).x
    return float((out - exact).square().mean().sqrt())


def test_smaller_budgets_start_the_optimiser_and_keep_the_error_from_rising_with_nfe():
    mixture, gaussian = _mixture_target()
    common = dict(
        shape=(3,),
        solvers=["dpmpp_2m"],
        nfes=[5, 3, 4],  # any order: smaller budgets are tuned first
        seeds=range(10_000, 10_004),
        validation_seeds=range(20_000, 20_004),
        levels=(0.5, 2.0),
        reference_steps=8,
        dtype=torch.float64,
        disable=True,
    )
    validation = range(20_000, 20_004)
    # Karras grids only, rho 7: the best grid at NFE 5 teleports to 2.0 and is worse held out (0.103)
    # than NFE 4's grid (0.057); NFE 4's grid with its largest step halved replaces it.
    recipe = tune(mixture, gaussian, method="family", rhos=(7.0,), **common)
    cells = recipe.provenance["cells"]
    nfe4, nfe5 = recipe.entry("dpmpp_2m", 4), recipe.entry("dpmpp_2m", 5)
    assert cells["dpmpp_2m@5"]["chosen"] == "refined" and cells["dpmpp_2m@5"]["refined"]["from_nfe"] == 4
    assert nfe5.sigmas == _refined_by_hand(nfe4.sigmas, 5)
    v5 = _rms_to_exact(mixture, gaussian, validation, nfe5.sigmas)
    assert v5 == pytest.approx(cells["dpmpp_2m@5"]["refined"]["validation_error"], rel=1e-9)
    assert v5 < _rms_to_exact(mixture, gaussian, validation, nfe4.sigmas)
    assert v5 < cells["dpmpp_2m@5"]["family"]["validation_error"]
    assert nfe5.error == pytest.approx(_rms_to_exact(mixture, gaussian, range(10_000, 10_004), nfe5.sigmas))
    # Free levels: at NFE 4 the optimiser starts from NFE 3's tuned grid refined, better than the
    # best Karras grid, and ends at least as good.
    recipe = tune(mixture, gaussian, method="free", rhos=(3.0, 7.0), max_evaluations=6, **common)
    free = recipe.provenance["cells"]["dpmpp_2m@4"]["free"]
    assert free["start"] == "nfe 3"
    start = _refined_by_hand(recipe.entry("dpmpp_2m", 3).sigmas, 4)
    assert free["start_error"] == pytest.approx(
        _rms_to_exact(mixture, gaussian, range(10_000, 10_004), start), rel=1e-9
    )
    assert free["start_error"] < recipe.provenance["cells"]["dpmpp_2m@4"]["family"]["error"]
    assert recipe.entry("dpmpp_2m", 4).error <= free["start_error"]
