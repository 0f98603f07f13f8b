"""Bad input to ``sigma_skip="auto"``, ``recipe=`` and probe records: errors that name the fix."""

from __future__ import annotations

import json

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Diagonal, Gaussian
from gaussport.tuning import ProbeRecord, Recipe, RecipeEntry, probe

from ._rules import rejected

D = 4
WARM = Gaussian(torch.zeros(D, dtype=torch.float64), Diagonal(torch.ones(D, dtype=torch.float64)))
X = 80.0 * torch.randn(2, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
GRID = grids.karras(4, 0.002, 80.0)
RECIPE = Recipe(80.0, (RecipeEntry("dpmpp_2m", 3, 2.0, (2.0, 0.5, 0.05, 0.0), {}, None),), {})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sigma_skip": "auto"},  # no warm start
        {"recipe": RECIPE},  # no warm start
        {"warm_start": WARM, "sigma_skip": "best"},
        {"warm_start": WARM, "sigma_skip": 2.0, "probes": torch.zeros(2, D)},
        {"warm_start": WARM, "sigma_skip": "auto", "probes": 3},
        {"warm_start": WARM, "sigma_skip": "auto", "probes": "/nonexistent/probe.json"},
        {"warm_start": WARM, "recipe": RECIPE, "sigma_skip": 2.0},
        {"warm_start": WARM, "recipe": RECIPE, "nfe": 7},
        {"warm_start": WARM, "recipe": RECIPE, "nfe": 0},
        {"warm_start": WARM, "recipe": "recipe.json"},
        {"warm_start": WARM, "recipe": object()},
        {"warm_start": WARM, "recipe": RECIPE, "eta": 0.5},
        {"warm_start": WARM, "sigma_skip": 2.0, "nfe": 3},
    ],
)
def test_sample_rejects(kwargs) -> None:
    rejected(lambda: gaussport.sample(WARM, X, GRID, "dpmpp_2m", **kwargs))


def test_recipe_on_another_sigma_max_is_rejected() -> None:
    rejected(
        lambda: gaussport.sample(
            WARM, X, grids.karras(4, 0.002, 40.0), "dpmpp_2m", warm_start=WARM, recipe=RECIPE, nfe=3
        )
    )


def test_bad_probe_calls() -> None:
    rejected(lambda: probe(WARM, WARM, levels=[], cache=False))
    rejected(lambda: probe(WARM, WARM, levels=[1.0, -2.0], cache=False))
    rejected(lambda: probe(WARM, WARM, probes=0, cache=False))
    rejected(lambda: probe(WARM, WARM, torch.zeros(0, D), cache=False))
    rejected(lambda: probe(WARM, lambda x, s: x, cache=False))  # no data and no sample()


@pytest.mark.parametrize("form", ["departure", "mixture", "best"])
def test_auto_surrogate_the_record_cannot_give_is_rejected(form) -> None:
    from gaussport.tuning import auto_sigma_skip

    # Probed from the Gaussian's marginal (no data): no surrogate of any form, and no such form.
    record = probe(WARM, WARM, levels=[1.0, 10.0], probes=2, cache=False, model_dtype=torch.float64)
    rejected(lambda: auto_sigma_skip(WARM, WARM, GRID, "dpmpp_2m", probes=record, surrogate=form))


def test_auto_departure_surrogate_needs_the_fit() -> None:
    from gaussport.tuning import auto_sigma_skip

    data = torch.randn(10, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    record = probe(
        WARM,
        WARM,
        data,
        levels=[1.0, 10.0],
        probes=2,
        cache=False,
        model_dtype=torch.float64,
        departure=False,
    )
    rejected(lambda: auto_sigma_skip(WARM, WARM, GRID, "dpmpp_2m", probes=record, surrogate="departure"))


def _valid(tmp_path):
    record = probe(WARM, WARM, levels=[1.0, 10.0], probes=2, cache=False, model_dtype=torch.float64)
    return record.to_json()


@pytest.mark.parametrize(
    "change",
    [
        {"format": "other"},
        {"levels": [1.0, 10.0]},
        {"levels": [10.0, -1.0]},
        {"relative_mean": [0.1]},
        {"absolute_rms": [0.1, float("nan")]},
        {"probes": 0},
        {"probes": "16"},
        {"source": "somewhere"},
        {"model": 3},
        {"extra": 1},
    ],
)
def test_probe_file_is_validated(tmp_path, change) -> None:
    data = {**_valid(tmp_path), **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    error = rejected(lambda: ProbeRecord.load(path))
    assert str(path) in str(error)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "change",
    [
        {"gains": [[0.1, 0.2, 0.3], [0.1, 0.2]]},
        {"gains": [[0.1, 0.2]]},
        {"shifts": [[0.0], [0.0]]},
        {"gains": [[0.1, float("nan")], [0.1, 0.2]]},
    ],
)
def test_probe_file_surrogate_is_validated(tmp_path, change) -> None:
    data = torch.randn(10, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    warm = Gaussian.fit(data)
    record = probe(
        warm, warm, data, levels=[1.0, 10.0], probes=3, cache=False, model_dtype=torch.float64, departure=True
    )
    values = record.to_json()
    values["surrogate"] = {**values["surrogate"], **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    error = rejected(lambda: ProbeRecord.load(path))
    assert str(path) in str(error)


def test_probe_file_that_is_not_json(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    rejected(lambda: ProbeRecord.load(path))
    path.write_text('{"levels": NaN}')
    rejected(lambda: ProbeRecord.load(path))
