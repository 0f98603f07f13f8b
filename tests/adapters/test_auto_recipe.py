"""``sigma_skip="auto"`` and ``recipe=`` through the k-diffusion and diffusers adapters.

What the adapters must do is what :func:`gaussport.sample` does on the same inputs (its own tests check
the level and the recipe's maths): the automatic level is ``auto_sigma_skip``'s choice for the same
solver, grid and teleport mode, from one probe record built once (no model call is repeated); a recipe
entry teleports to its ``sigma_skip`` and integrates its grid. The expected values come from
``gaussport.sample`` on the same denoiser and from a numeric ``sigma_skip`` equal to the chosen level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters import k_diffusion as gk
from gaussport.analytic import anisotropic_mixture
from gaussport.solvers import get as get_solver
from gaussport.testing import gaussian_of_shape
from gaussport.tuning import Recipe, RecipeEntry, auto_sigma_skip, probe

K = pytest.importorskip("k_diffusion")

# A nonlinear exact denoiser whose moment-matched Gaussian is close to it at high noise only: the
# automatic level is strictly inside the grid, so the tests see a real teleport.
MIXTURE = anisotropic_mixture(dim=6, n_components=3, seed=2)
GAUSSIAN = MIXTURE.moments()
GRID = grids.karras(8, 0.01, 80.0)
X = MIXTURE.sample(3, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
RECORD = probe(MIXTURE, GAUSSIAN, probes=8, cache=False, model_dtype=torch.float64)


def _entry(solver: str, nfe_steps: int, skip: float) -> RecipeEntry:
    sigmas = grids.karras(nfe_steps, 0.01, skip, rho=3.0)
    return RecipeEntry(solver, get_solver(solver).evaluations(sigmas), skip, sigmas, {}, None)


RECIPE = Recipe(80.0, (_entry("dpmpp_2m", 8, 3.0), _entry("dpmpp_2m", 5, 2.0), _entry("euler", 8, 4.0)), {})


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ----------------------------------------------------------------------------------------- k-diffusion


@pytest.mark.parametrize("solver,teleport", [("dpmpp_2m", "truncate"), ("heun", "respace")])
def test_k_diffusion_auto_level_is_the_one_sample_chooses(solver: str, teleport: str) -> None:
    level = auto_sigma_skip(MIXTURE, GAUSSIAN, GRID, solver, teleport=teleport, probes=RECORD)
    assert GRID[-2] < level < GRID[0]  # a real teleport, not the grid's top
    ref = gaussport.sample(
        MIXTURE, X, GRID, solver, warm_start=GAUSSIAN, sigma_skip="auto", teleport=teleport, probes=RECORD
    )
    assert ref.teleport == (GRID[0], level)
    sampler = gk.as_k_diffusion_sampler(solver)
    reports: list[dict[str, Any]] = []
    ours = sampler(
        MIXTURE,
        X,
        torch.tensor(GRID, dtype=torch.float64),
        callback=reports.append,
        disable=True,
        warm_start=GAUSSIAN,
        sigma_skip="auto",
        probes=RECORD,
        teleport=teleport,
    )
    numeric = sampler(
        MIXTURE,
        X,
        torch.tensor(GRID, dtype=torch.float64),
        disable=True,
        warm_start=GAUSSIAN,
        sigma_skip=level,
        teleport=teleport,
    )
    assert _rel(ours, ref.x) < 1e-12 and _rel(ours, numeric) < 1e-12
    assert len(reports) == len(GRID) - 1  # k-diffusion's contract: one report per interval
    if teleport == "truncate":  # the solver's first level is the chosen one
        assert level in [float(r["sigma"]) for r in reports]


def test_k_diffusion_recipe_on_a_unet_through_k_diffusion_wrappers(
    tiny_unet: Any, diffusers_pkg: Any
) -> None:
    # A real k-diffusion model wrapper around diffusers' tiny test UNet (float32), sampled with a recipe
    # entry: the same teleport and grid as gaussport.sample on the same model.
    scheduler = diffusers_pkg.EulerDiscreteScheduler()
    model = K.external.DiscreteEpsDDPMDenoiser(
        lambda x, t, **kw: tiny_unet(x, t, **kw).sample, scheduler.alphas_cumprod, quantize=False
    )
    warm = gaussian_of_shape((3, 8, 8), seed=3)
    sigmas = K.sampling.get_sigmas_karras(5, 0.03, 80.0)  # 5 dpmpp_2m evaluations: the NFE-5 entry
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    with torch.no_grad():
        ref = gaussport.sample(model, x, sigmas, "dpmpp_2m", warm_start=warm, recipe=RECIPE, disable=True)
    assert ref.teleport[1] == 2.0 and ref.nfe == 5
    calls: list[float] = []
    counted = lambda x, sigma, **kw: calls.append(float(sigma[0])) or model(x, sigma, **kw)  # noqa: E731
    ours = gk.sample_dpmpp_2m(counted, x, sigmas, disable=True, warm_start=warm, recipe=RECIPE)
    assert _rel(ours, ref.x) < 1e-6
    assert calls == pytest.approx(list(RECIPE.entry("dpmpp_2m", 5).sigmas[:-1]), rel=1e-6)


@pytest.mark.parametrize("source", ["object", "file"])
def test_k_diffusion_recipe_entry_is_what_sample_runs(source: str, tmp_path: Path) -> None:
    recipe: Any = RECIPE
    if source == "file":
        recipe = tmp_path / "recipe.json"
        RECIPE.save(recipe)
    caller = grids.karras(8, 0.002, 80.0)  # 8 dpmpp_2m evaluations: the entry at NFE 8
    ref = gaussport.sample(MIXTURE, X, caller, "dpmpp_2m", warm_start=GAUSSIAN, recipe=RECIPE)
    entry = RECIPE.entry("dpmpp_2m", 8)
    assert ref.teleport == (80.0, entry.sigma_skip) and tuple(ref.sigmas) == entry.sigmas
    # Independently: the Gaussian's exact flow to the entry's level, then the solver on its grid.
    teleported = GAUSSIAN.flow(X, 80.0, entry.sigma_skip)
    expected = gaussport.solve(MIXTURE, teleported, entry.sigmas, "dpmpp_2m", disable=True).x
    reports: list[dict[str, Any]] = []
    ours = gk.sample_dpmpp_2m(
        MIXTURE,
        X,
        torch.tensor(caller, dtype=torch.float64),
        callback=reports.append,
        disable=True,
        warm_start=GAUSSIAN,
        recipe=recipe,
    )
    assert _rel(ours, ref.x) < 1e-12 and _rel(ours, expected) < 1e-12
    assert [float(r["sigma"]) for r in reports] == list(entry.sigmas[:-1])
    # nfe= picks another entry, whatever the caller's grid costs.
    five = gk.sample_dpmpp_2m(
        MIXTURE,
        X,
        torch.tensor(caller, dtype=torch.float64),
        disable=True,
        warm_start=GAUSSIAN,
        recipe=recipe,
        nfe=5,
    )
    ref5 = gaussport.sample(MIXTURE, X, caller, "dpmpp_2m", warm_start=GAUSSIAN, recipe=RECIPE, nfe=5)
    assert _rel(five, ref5.x) < 1e-12 and _rel(five, ours) > 1e-6


def test_k_diffusion_recipe_img2img_solves_the_grid_without_teleport() -> None:
    # A second pass (hires fix) starting below the recipe's sigma_max: no teleport, as a numeric level
    # above the grid.
    below = grids.karras(8, 0.01, 80.0)[3:]
    x = MIXTURE.sample(3, below[0], torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = gk.sample_dpmpp_2m(
        MIXTURE, x, torch.tensor(below, dtype=torch.float64), disable=True, warm_start=GAUSSIAN, recipe=RECIPE
    )
    plain = gk.sample_dpmpp_2m(MIXTURE, x, torch.tensor(below, dtype=torch.float64), disable=True)
    assert _rel(ours, plain) < 1e-12


BAD_K_DIFFUSION: list[tuple[dict[str, Any], str]] = [
    ({"recipe": RECIPE}, "warm_start"),
    ({"sigma_skip": "auto"}, "warm_start"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "sigma_skip": 2.0}, "drop sigma_skip"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "sigma_skip": "auto"}, "drop sigma_skip"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "probes": RECORD}, "drop sigma_skip"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "nfe": 7}, "NFE 5, 8"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "nfe": 0}, "positive integer"),
    ({"warm_start": GAUSSIAN, "sigma_skip": 2.0, "nfe": 8}, "pass recipe"),
    ({"warm_start": GAUSSIAN, "sigma_skip": 2.0, "probes": RECORD}, "sigma_skip='auto'"),
    ({"warm_start": GAUSSIAN, "sigma_skip": "best"}, "sigma_skip"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "solver_order": 1}, "drop them"),
    ({"warm_start": GAUSSIAN, "recipe": RECIPE, "parameterization": "flow"}, "numeric sigma_skip"),
]


@pytest.mark.parametrize("kwargs,fix", BAD_K_DIFFUSION, ids=[str(sorted(k)) for k, _ in BAD_K_DIFFUSION])
def test_k_diffusion_refuses_with_the_fix(kwargs: dict[str, Any], fix: str) -> None:
    with pytest.raises(ValueError, match=fix.replace("(", r"\(")):
        gk.sample_dpmpp_2m(MIXTURE, X, torch.tensor(GRID), disable=True, **kwargs)


def test_k_diffusion_refuses_auto_and_recipes_where_it_cannot_use_them() -> None:
    up = torch.tensor(grids.karras(8, 0.01, 80.0)[::-1][1:])
    with pytest.raises(ValueError, match="inversion"):
        gk.sample_euler(MIXTURE, X / 8.0, up, disable=True, warm_start=GAUSSIAN, sigma_skip="auto")
    instance = gk.as_k_diffusion_sampler(get_solver("dpmpp_2m"))
    with pytest.raises(ValueError, match="registered solver name"):
        instance(MIXTURE, X, torch.tensor(GRID), disable=True, warm_start=GAUSSIAN, recipe=RECIPE)
    with pytest.raises(ValueError, match="no entry for the solver 'heun'"):
        gk.sample_heun(MIXTURE, X, torch.tensor(GRID), disable=True, warm_start=GAUSSIAN, recipe=RECIPE)


# ------------------------------------------------------------------------------------------- diffusers


def _recipe_entry_vp(solver: str, steps: int, skip: float) -> RecipeEntry:
    sigmas = grids.karras(steps, 0.05, skip, rho=3.0)  # inside the VP schedule's range
    return RecipeEntry(solver, get_solver(solver).evaluations(sigmas), skip, sigmas, {}, None)


RECIPE_VP = Recipe(80.0, (_recipe_entry_vp("dpmpp_2m", 8, 3.0), _recipe_entry_vp("dpmpp_2m", 5, 2.0)), {})


def _scheduler(**config: Any) -> Any:
    from gaussport.adapters.diffusers import GaussportScheduler

    base = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "sigma_max": 80.0}
    return GaussportScheduler(**{**base, **config})


VP_GRID = grids.karras(8, 0.03, 80.0)  # the run's VE levels (set_timesteps(sigmas=...)), 8 dpmpp_2m calls


def _pipeline(sched: Any, z: Tensor) -> tuple[Tensor, Any]:
    """A pipeline-style loop (scale_model_input -> model -> step) over :data:`VP_GRID` on the mixture's
    exact epsilon model; returns the final sample and the model as a gaussport denoiser."""
    from gaussport.adapters.diffusers import DiffusersDenoiser
    from gaussport.schedules import NativeModel, VPDiscrete
    from gaussport.testing.diffusers import ExactForward

    model = ExactForward(NativeModel(MIXTURE, VPDiscrete(sched.alphas_cumprod.double()), "epsilon"))
    sched.set_warm_start(GAUSSIAN)
    sched.set_timesteps(sigmas=list(VP_GRID))
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(model(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x, DiffusersDenoiser(model, sched)


Z = torch.randn(3, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.parametrize("probes", ["object", "file"])
def test_scheduler_auto_level_is_the_one_sample_chooses(
    probes: str, diffusers_pkg: Any, tmp_path: Path
) -> None:
    if probes == "file":
        RECORD.save(tmp_path / "probes.json")
        sched = _scheduler(solver="dpmpp_2m", sigma_skip="auto", probes_path=str(tmp_path / "probes.json"))
    else:
        sched = _scheduler(solver="dpmpp_2m", sigma_skip="auto")
        sched.set_probes(RECORD)
    x, den = _pipeline(sched, Z)
    grid = VP_GRID
    level = auto_sigma_skip(MIXTURE, GAUSSIAN, grid, "dpmpp_2m", teleport="truncate", probes=RECORD)
    assert grid[-2] < level < grid[0]
    ref = gaussport.sample(
        den,
        Z * grid[0],
        grid,
        "dpmpp_2m",
        warm_start=GAUSSIAN,
        sigma_skip="auto",
        teleport="truncate",
        probes=RECORD,
    )
    assert ref.teleport == (grid[0], level)
    assert abs(float(sched.sigmas[0]) - level) <= 1e-6 * level  # the first model call is at the level
    assert len(sched.timesteps) == len(ref.sigmas) - 1 and _rel(x, ref.x) < 1e-4


@pytest.mark.parametrize("how", ["set_recipe", "recipe_path", "recipe_nfe"])
def test_scheduler_recipe_entry_is_what_sample_runs(how: str, diffusers_pkg: Any, tmp_path: Path) -> None:
    path = tmp_path / "recipe.json"
    RECIPE_VP.save(path)
    if how == "set_recipe":
        sched = _scheduler(solver="dpmpp_2m")
        sched.set_recipe(RECIPE_VP)
    else:
        # recipe_nfe, with the teleport paid by a discarded first call (teleport_at="step")
        nfe = {"recipe_nfe": 5, "teleport_at": "step"} if how == "recipe_nfe" else {}
        sched = _scheduler(solver="dpmpp_2m", recipe_path=str(path), **nfe)
    x, den = _pipeline(sched, Z)
    grid = VP_GRID
    nfe = 5 if how == "recipe_nfe" else 8
    entry = RECIPE_VP.entry("dpmpp_2m", nfe)
    ref = gaussport.sample(den, Z * grid[0], grid, "dpmpp_2m", warm_start=GAUSSIAN, recipe=RECIPE_VP, nfe=nfe)
    assert ref.teleport == (80.0, entry.sigma_skip) and tuple(ref.sigmas) == entry.sigmas
    # scale_model_input teleports at no cost; teleport_at="step" discards one call
    assert len(sched.timesteps) == entry.nfe + (how == "recipe_nfe")
    assert _rel(x, ref.x) < 1e-4


def test_scheduler_refuses_with_the_fix(diffusers_pkg: Any, tmp_path: Path) -> None:
    path = tmp_path / "recipe.json"
    RECIPE_VP.save(path)
    for config, fix in [
        ({"sigma_skip": "best"}, "or 'auto'"),
        ({"sigma_skip": 2.0, "probes_path": "p.json"}, "set sigma_skip='auto'"),
        ({"sigma_skip": 2.0, "recipe_path": str(path)}, "drop them"),
        ({"solver_options": {"solver_order": 1}, "recipe_path": str(path)}, "drop them"),
        ({"recipe_path": str(path), "recipe_nfe": 0}, "positive integer"),
    ]:
        with pytest.raises(ValueError, match=fix):
            _scheduler(solver="dpmpp_2m", **config)
    for config, fix, warm in [
        ({"sigma_skip": "auto"}, "probes_path=path", GAUSSIAN),
        ({"recipe_path": str(path)}, "statistics_path=", None),
        ({"recipe_path": str(path), "recipe_nfe": 7}, "NFE 5, 8", GAUSSIAN),
        ({"recipe_nfe": 5}, "pass recipe_path", GAUSSIAN),
    ]:
        sched = _scheduler(solver="dpmpp_2m", **config)
        sched.set_warm_start(warm)
        with pytest.raises(ValueError, match=fix):
            sched.set_timesteps(sigmas=list(VP_GRID))
    sched = _scheduler(solver="dpmpp_2m", recipe_path=str(path), sigma_max=None)  # the schedule's 14.6
    sched.set_warm_start(GAUSSIAN)
    with pytest.raises(ValueError, match="set sigma_max=80.0"):
        sched.set_timesteps(8)
    with pytest.raises(ValueError, match="without sigma_skip"):
        _scheduler(solver="dpmpp_2m", sigma_skip=2.0).set_recipe(RECIPE_VP)
    with pytest.raises(TypeError, match="ProbeRecord"):
        _scheduler(solver="dpmpp_2m", sigma_skip="auto").set_probes(str(path))
