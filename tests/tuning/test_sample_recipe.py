"""``gaussport.sample(..., recipe=R)`` and ``sigma_skip="auto"``: the same runs as spelled out by hand."""

from __future__ import annotations

import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Diagonal, Gaussian
from gaussport.tuning import Recipe, RecipeEntry, auto_sigma_skip, probe

D = 6


def _gaussian(mean: float, variance: float) -> Gaussian:
    return Gaussian(
        torch.full((D,), mean, dtype=torch.float64), Diagonal(torch.full((D,), variance, dtype=torch.float64))
    )


MODEL, WARM = _gaussian(0.0, 0.3), _gaussian(0.05, 0.3)
X = 80.0 * torch.randn(3, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _recipe() -> Recipe:
    entries = (
        RecipeEntry("dpmpp_2m", 3, 2.0, (2.0, 0.5, 0.05, 0.0), {}, None),
        RecipeEntry("ipndm", 4, 80.0, (80.0, 5.0, 0.5, 0.05, 0.0), {}, None),
    )
    return Recipe(80.0, entries, {"model": "test"})


def test_recipe_entry_runs_as_the_teleport_and_grid_it_names() -> None:
    caller_grid = grids.karras(3, 0.002, 80.0)  # 3 evaluations of dpmpp_2m selects the NFE-3 entry
    got = gaussport.sample(MODEL, X, caller_grid, "dpmpp_2m", warm_start=WARM, recipe=_recipe())
    by_hand = gaussport.sample(
        MODEL,
        X,
        (80.0, 2.0, 0.5, 0.05, 0.0),
        "dpmpp_2m",
        warm_start=WARM,
        sigma_skip=2.0,
        teleport="truncate",
    )
    torch.testing.assert_close(got.x, by_hand.x, rtol=0, atol=0)
    assert got.teleport == (80.0, 2.0) and got.nfe == 3 and got.sigmas == (2.0, 0.5, 0.05, 0.0)


def test_recipe_file_is_read_by_sample(tmp_path) -> None:
    path = tmp_path / "recipe.json"
    _recipe().save(path)
    caller_grid = grids.karras(3, 0.002, 80.0)
    from_file = gaussport.sample(MODEL, X, caller_grid, "dpmpp_2m", warm_start=WARM, recipe=path)
    from_object = gaussport.sample(MODEL, X, caller_grid, "dpmpp_2m", warm_start=WARM, recipe=_recipe())
    torch.testing.assert_close(from_file.x, from_object.x, rtol=0, atol=0)
    assert from_file.teleport == (80.0, 2.0)


def test_recipe_nfe_overrides_the_grid_and_sigma_max_entry_does_not_teleport() -> None:
    got = gaussport.sample(MODEL, X, (80.0, 0.0), "ipndm", warm_start=WARM, recipe=_recipe(), nfe=4)
    plain = gaussport.solve(MODEL, X, (80.0, 5.0, 0.5, 0.05, 0.0), "ipndm")
    torch.testing.assert_close(got.x, plain.x, rtol=0, atol=0)
    assert got.teleport == (80.0, 80.0) and got.nfe == 4


def test_auto_in_sample_uses_the_level_auto_sigma_skip_picks(tmp_path) -> None:
    record = probe(MODEL, WARM, probes=4, cache=False, model_dtype=torch.float64)
    path = tmp_path / "probe.json"
    record.save(path)
    grid = grids.karras(6, 0.002, 80.0)
    level = auto_sigma_skip(MODEL, WARM, grid, "dpmpp_2m", teleport="respace", probes=record)
    got = gaussport.sample(
        MODEL, X, grid, "dpmpp_2m", warm_start=WARM, sigma_skip="auto", probes=path, teleport="respace"
    )
    by_hand = gaussport.sample(
        MODEL, X, grid, "dpmpp_2m", warm_start=WARM, sigma_skip=level, teleport="respace"
    )
    assert got.teleport == (80.0, level)
    torch.testing.assert_close(got.x, by_hand.x, rtol=0, atol=0)


class _GaussianEDMNet(torch.nn.Module):
    """An EDM-interface net whose denoiser is MODEL's exact posterior mean (no rounding table)."""

    label_dim = 0

    def forward(self, x, sigma, class_labels=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        return MODEL(x.to(torch.float64), sigma.reshape(-1).to(torch.float64)).to(x.dtype)


def test_edm_adapter_passes_auto_and_recipe_through() -> None:
    from gaussport.adapters.edm import edm_sample

    latents = X / 80.0
    grid = grids.karras(3, 0.002, 80.0)
    record = probe(MODEL, WARM, probes=4, cache=False, model_dtype=torch.float64)
    level = auto_sigma_skip(MODEL, WARM, grid, "dpmpp_2m", probes=record)
    net = _GaussianEDMNet()
    auto = edm_sample(
        net,
        latents,
        sigmas=grid,
        solver="dpmpp_2m",
        warm_start=WARM,
        sigma_skip="auto",
        probes=record,
        teleport="respace",
        disable=True,
    )
    assert auto.teleport[1] == level
    tuned = edm_sample(
        net, latents, sigmas=grid, solver="dpmpp_2m", warm_start=WARM, recipe=_recipe(), disable=True
    )
    assert tuned.teleport == (80.0, 2.0) and tuned.sigmas == (2.0, 0.5, 0.05, 0.0)
