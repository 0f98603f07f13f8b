"""`gaussport tune` and `gaussport demo --recipe`: tuned recipes on the command line and in the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gaussport
from gaussport import cli, demo
from gaussport.digits import load_digits_recipe
from gaussport.tuning import Recipe, RecipeEntry
from gaussport.tuning.probes import fingerprint_model


def _recipe(path: Path, sigma_max: float = 80.0) -> Path:
    """A hand-made recipe: dpmpp_2m at NFE 2 teleports to 1.5 and steps to 0.3, then 0."""
    Recipe(sigma_max, (RecipeEntry("dpmpp_2m", 2, 1.5, (1.5, 0.3, 0.0)),), {"model": "hand-made"}).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwires on loading the digits model: bad input must be refused before."""

    def tripwire(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("work started before the bad input was refused")

    import gaussport.digits

    monkeypatch.setattr(gaussport.digits, "evaluator", tripwire)
    monkeypatch.setattr(gaussport.digits, "load_digits_denoiser", tripwire)


def test_tune_help_names_the_method_and_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["tune", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--validation-seeds" in out and "docs/recipes.md" in out and "Nelder-Mead" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "heun", "--nfe", "4", "6"], "cannot spend any of the budgets"),
        (["--nfe", "0"], "argument --nfe"),
        (["--out", "recipe.txt"], "must end in .json"),
        (["--method", "grid"], "invalid choice"),
    ],
)
def test_tune_refuses_bad_input_before_work(
    tmp_path: Path, args: list[str], message: str, no_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert cli.main(["tune", "--out", str(out), *args, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_tune_writes_a_valid_recipe_with_its_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    args = ["tune", "--solver", "dpmpp_2m", "--nfe", "2", "--seeds", "2", "--validation-seeds", "1"]
    args += ["--max-evaluations", "3", "--reference-steps", "1", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    assert "wrote" in capsys.readouterr().out
    recipe = Recipe.load(out)
    entry = recipe.entry("dpmpp_2m", 2)
    assert gaussport.solvers.get("dpmpp_2m").evaluations(entry.sigmas) == 2
    p = recipe.provenance
    assert p["tuning_seeds"] == ((10_000, 10_001),) and p["validation_seeds"] == (20_000,)
    assert p["command"].startswith("gaussport tune --solver dpmpp_2m") and p["reference"]["nfe_per_seed"] > 0
    assert p["model"] == fingerprint_model(gaussport.digits.load_digits_denoiser())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "{foreign}"], "foreign.json' is not a valid gaussport recipe"),
        (["--recipe", "{other_sigma_max}"], "starts sampling at sigma_max = 40"),
        (["--recipe", "{missing}"], "no such file"),
        (["--recipe", "none", "--target", "mixture"], "--recipe: options of the digits model only"),
    ],
)
def test_demo_recipe_bad_input(
    tmp_path: Path, args: list[str], message: str, no_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "foreign.json").write_text('{"gaussport_format": "gaussport.statistics"}')
    places = {
        "foreign": str(tmp_path / "foreign.json"),
        "other_sigma_max": str(_recipe(tmp_path / "other.json", sigma_max=40.0)),
        "missing": str(tmp_path / "missing.json"),
    }
    out = tmp_path / "out"
    words = [w.format(**places) for w in args]
    assert cli.main(["demo", *words, "--quiet", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_demo_uses_the_recipe_where_it_has_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path / "r.json")
    base = ["demo", "--solver", "dpmpp_2m", "--nfe", "2", "3", "--batch", "3", "--frechet-samples", "0"]
    base += ["--reference-steps", "2", "--no-plot", "--quiet"]
    assert cli.main([*base, "--recipe", str(recipe), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "recipe 1.5" in out and "2 (respace)" in out  # NFE 2 from the recipe, NFE 3 the fixed level
    runs = json.loads((tmp_path / "a" / "results.json").read_text())
    assert runs["settings"]["recipe_cells"] == [["dpmpp_2m", 2]]
    tuned = [r for r in runs["evaluations"] if r["teleport"] == "recipe"]
    assert [(r["nfe"], r["sigma_skip"], r["grid"]) for r in tuned] == [(2, 1.5, [1.5, 0.3, 0.0])]
    # --recipe none: the old behaviour, the fixed level everywhere.
    assert cli.main([*base, "--recipe", "none", "--out", str(tmp_path / "b")]) == 0
    assert "error, teleport to 2" in capsys.readouterr().out
    runs = json.loads((tmp_path / "b" / "results.json").read_text())
    assert runs["settings"]["recipe"] is None
    assert {r["teleport"] for r in runs["evaluations"]} == {"none", "respace"}


def test_the_shipped_recipe_is_the_demo_default() -> None:
    shipped = load_digits_recipe()
    assert demo.digits_demo.resolve_recipe(demo.digits_demo.DEFAULT_RECIPE) == shipped
    assert demo.digits_demo.resolve_recipe(None) is None
    for solver in ("dpmpp_2m", "unipc_bh2", "ipndm", "dpm_solver_v3"):
        for nfe in (3, 4, 5, 6, 8, 10):
            entry = shipped.entry(solver, nfe)
            assert entry.sigma_skip < shipped.sigma_max  # every shipped entry teleports
    assert shipped.provenance["model"] == fingerprint_model(gaussport.digits.load_digits_denoiser())
    assert min(s for cell in shipped.provenance["tuning_seeds"] for s in cell) >= 10_000
