"""Bad input, category "recipes": hand-made, damaged and foreign recipe files, and bad entries in Python.

A recipe file is JSON that people may read and edit, so it has no checksum: a damaged file must
either be refused with a ValueError naming the file, or load as a recipe whose every promise holds
(strictly decreasing grids starting at ``sigma_skip``, registered solvers, ``nfe`` equal to the
grid's cost, finite numbers). Failed saves leave the target as it was.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _rules import rejected, unchanged_after_failure
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport.tuning import Recipe, RecipeEntry, load_recipe


def _recipe() -> Recipe:
    return Recipe(
        80.0,
        (
            RecipeEntry("dpmpp_2m", 3, 1.5, (1.5, 0.4, 0.05, 0.0), {}, 0.1),
            RecipeEntry("heun", 3, 0.8, (0.8, 0.1, 0.0)),
            RecipeEntry("dpmpp_3m", 2, 80.0, (80.0, 1.0, 0.0), {"solver_order": 3}),
        ),
        {"model": "abc", "seeds": [[10000, 10031]]},
    )


def _holds_its_promises(recipe: Recipe) -> None:
    assert math.isfinite(recipe.sigma_max) and recipe.sigma_max > 0
    for e in recipe.entries:
        assert e.solver in gaussport.solvers.available()
        assert e.sigmas[0] == e.sigma_skip <= recipe.sigma_max
        assert all(a > b for a, b in zip(e.sigmas, e.sigmas[1:], strict=False)) and e.sigmas[-1] >= 0
        assert all(math.isfinite(s) for s in e.sigmas)
        assert gaussport.solvers.get(e.solver, **dict(e.options)).evaluations(e.sigmas) == e.nfe


BAD_VALUES: dict[str, list[Any]] = {
    "solver": [None, 3, "", "DPMPP_2M", ["dpmpp_2m"]],
    "nfe": [None, "3", 3.0, True, 0, -1, 4],
    "sigma_skip": [None, "1.5", True, [1.5], 1e400, -1.5, 0.0, 2.0],
    "sigmas": [None, "1.5", [], [1.5], [1.5, "0.4", 0.05, 0.0], [1.5, 0.4, 0.4, 0.0], [1.5, 0.05, 0.4, 0.0]],
    "options": [None, [], "x", {"solver_order": "2"}, {"no_such_option": 1}],
    "error": ["0.1", [0.1], 1e400],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_a_bad_entry_field_is_refused_naming_the_file(tmp_path: Path, field: str, value: Any) -> None:
    data = _recipe().to_json()
    data["entries"][0][field] = value
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    exc = rejected(lambda: Recipe.load(path))
    assert isinstance(exc, ValueError) and "recipe.json" in str(exc)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(sigma_max=1.0),  # entries teleport above it
        lambda d: d.update(sigma_max="80"),
        lambda d: d.update(sigma_max=None),
        lambda d: d.pop("sigma_max"),
        lambda d: d.update(entries=[]),
        lambda d: d.update(entries={}),
        lambda d: d.update(entries=[1]),
        lambda d: d["entries"].append(dict(d["entries"][0])),  # a duplicate
        lambda d: d.update(version=2),
        lambda d: d.pop("gaussport_format"),
        lambda d: d.update(provenance=[1, 2]),
        lambda d: d.update(unknown=True),
    ],
)
def test_a_bad_top_level_is_refused(tmp_path: Path, change: Any) -> None:
    data = _recipe().to_json()
    change(data)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    assert "recipe.json" in str(rejected(lambda: Recipe.load(path)))


@pytest.mark.parametrize("text", ["", "[]", "null", '"recipe"', "{", "NaN", b"\xff\xfe{}", "Infinity"])
def test_foreign_files_are_refused(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "recipe.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert isinstance(rejected(lambda: Recipe.load(path)), ValueError)


def test_paths_that_are_not_recipe_files(tmp_path: Path) -> None:
    assert isinstance(rejected(lambda: Recipe.load(tmp_path / "none.json")), FileNotFoundError)
    assert isinstance(rejected(lambda: Recipe.load(tmp_path)), ValueError)
    for bad in (None, 3, b"recipe.json", ["recipe.json"], {"entries": []}):
        assert isinstance(rejected(lambda bad=bad: load_recipe(bad)), TypeError)


@settings(max_examples=30)
@given(st.data())
def test_damaged_files_are_refused_or_hold_every_promise(tmp_path_factory: Any, data: Any) -> None:
    path = tmp_path_factory.mktemp("recipes") / "recipe.json"
    _recipe().save(path)
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        at = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    path.write_bytes(bytes(raw))
    try:
        loaded = Recipe.load(path)
    except ValueError as exc:
        assert "recipe.json" in str(exc)
        return
    _holds_its_promises(loaded)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nfe": True},
        {"nfe": 3.0},
        {"sigma_skip": math.nan},
        {"sigma_skip": torch.tensor(1.5)},
        {"sigmas": "1.5 0.4"},
        {"sigmas": (1.5, math.inf, 0.0)},
        {"options": {"solver_order": torch.tensor(2)}},
        {"options": "solver_order=2"},
        {"error": math.nan},
    ],
)
def test_bad_entries_in_python(kwargs: dict[str, Any]) -> None:
    fields = {"solver": "dpmpp_2m", "nfe": 3, "sigma_skip": 1.5, "sigmas": (1.5, 0.4, 0.05, 0.0)}
    rejected(lambda: RecipeEntry(**{**fields, **kwargs}))


def test_failed_saves_leave_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "recipe.json"
    target.write_text("keep me")
    unchanged_after_failure(target, lambda: _recipe().save(tmp_path / "missing" / "recipe.json"))
    unchanged_after_failure(target, lambda: _recipe().save(tmp_path))
    assert target.read_text() == "keep me"
