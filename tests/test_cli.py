"""The `gaussport` command line: the digits demo, the analytic mixture demo, train-demo."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import gaussport
from gaussport import cli, demo, grids
from gaussport.cli import demo as cli_demo
from gaussport.evaluation import nfe_to_reach

PNG = b"\x89PNG\r\n\x1a\n"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "solvers" in out and "train-demo" in out and "teleport" in out


# ---------------------------------------------------------------------- the digits demo
@pytest.mark.slow
def test_digits_demo_writes_table_grids_plot_json_csv(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    args = ["demo", "--solver", "heun", "euler", "--nfe", "3", "5", "--batch", "4", "--seed", "7"]
    args += ["--frechet-samples", "10", "--reference-steps", "2", "--out", str(tmp_path), "--quiet"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "error, no teleport" in out and "error, teleport to 2" in out and "Frechet" in out
    # Frechet cells are means; the noise is the one measured statement (issue 11, item 13).
    assert demo.FRECHET_NOISE in out
    assert not [line for line in out.splitlines() if line.startswith("|") and "+-" in line]
    assert "heun: the teleport reaches the no-teleport error at NFE 5" in out
    for name in ("samples_nfe3.png", "samples_nfe5.png", "quality_vs_nfe.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"]["seeds"] == [7, 10] and record["settings"]["sigma_skip"] == 2.0
    runs = record["evaluations"]
    assert len(runs) == 2 * 2 * 2  # solvers x NFE x (no teleport, teleport)
    for r in runs:
        assert r["nfe"] <= r["nfe_budget"] and r["trajectory_rms"] > 0 and len(r["frechet"]) == 2
        assert (r["teleport"] == "none") == (r["sigma_skip"] is None)
        assert r["grid"][0] == (80.0 if r["teleport"] == "none" else 2.0)
    heun = {(r["nfe_budget"], r["teleport"]): r["nfe"] for r in runs if r["solver"] == "heun"}
    assert heun == {(3, "none"): 3, (3, "respace"): 3, (5, "none"): 5, (5, "respace"): 5}
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["trajectory_rms"]) for r in rows] == [r["trajectory_rms"] for r in runs]


@pytest.mark.slow
def test_digits_demo_library_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = demo.run_digits_demo(
        ["euler"], [4, 2], batch=3, frechet_samples=0, reference_steps=2, teleport="truncate", disable=True
    )
    assert result.settings["nfes"] == [2, 4] and result.settings["frechet_seeds"] == []
    assert [(e.nfe_budget, e.teleport) for e in result.evaluations] == [
        (2, "none"),
        (2, "truncate"),
        (4, "none"),
        (4, "truncate"),
    ]
    assert all(e.frechet is None and e.samples.shape == (3, 1, 8, 8) for e in result.evaluations)
    assert result.exact.shape == (3, 1, 8, 8)
    warm = [result.find("euler", n, "truncate") for n in (2, 4)]
    plain_4 = result.find("euler", 4, "none").error
    assert result.reach()["euler"] == nfe_to_reach([2, 4], [e.error for e in warm], plain_4)
    assert "Frechet" not in demo.digits_table(result)
    written = demo.write_digits_outputs(result, tmp_path, plots=False)
    assert sorted(p.name for p in written) == ["results.csv", "results.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "nope"], "unknown solver 'nope'"),
        (["--nfe", "0"], "argument --nfe: must be a positive integer; got 0."),
        (["--steps", "3"], "--steps applies to --target mixture"),
        (["--sigma-skip", "100"], "must lie in"),
        (["--batch", "0"], "argument --batch: must be a positive integer; got 0."),
        (["--frechet-samples", "1"], "--frechet-samples must be 0 (no Frechet distance) or at least 2"),
        (["--target", "mixture", "--nfe", "6"], "--nfe: options of the digits model only"),
        (
            ["--target", "mixture", "--solver", "nope", "--steps", "3", "--batch", "2"],
            "unknown solver 'nope'",
        ),
    ],
)
def test_demo_reports_bad_input(
    tmp_path,  # type: ignore[no-untyped-def]
    args: list[str],
    message: str,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert cli.main(["demo", *args, "--quiet", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was written


def test_demo_rejects_unknown_teleport_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--teleport", "none"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad input first (issue 12, item 9)
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tripwires on the work itself (the digits model, the mixture target, training): bad input must
    be refused before any of it starts."""

    def tripwire(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("work started before the bad input was refused")

    import gaussport.demo.mixture_demo
    import gaussport.digits

    monkeypatch.setattr(gaussport.digits, "evaluator", tripwire)
    monkeypatch.setattr(gaussport.digits, "train_demo_model", tripwire)
    monkeypatch.setattr(gaussport.demo.mixture_demo, "demo_target", tripwire)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="cuda runs on this machine")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--device", "bogus"], "'bogus' is not a torch device; give cpu or cuda"),
        pytest.param(["demo", "--device", "cuda"], "'cuda' cannot run here", marks=NO_CUDA),
        (["demo", "--device", "meta"], "'meta' cannot run here"),
        (["demo", "--model", "{missing}"], "no such directory; `gaussport train-demo --out DIR` writes one"),
        (["demo", "--model", "{empty}"], "holds no digits model"),
        (["demo", "--model", "{file}"], "is a file; give the directory `gaussport train-demo --out DIR`"),
        (["demo", "--target", "mixture", "--batch", "0"], "argument --batch: must be a positive integer"),
        (["demo", "--target", "mixture", "--steps", "2"], "--steps 2: its Karras grid has no level"),
        (["demo", "--target", "mixture", "--device", "cpu"], "--device: options of the digits model only"),
        (["demo", "--out", "{file}"], "is a file, not a directory"),
        (["demo", "--cache-dir", "{file}/sub"], "in its path is a file, not a directory"),
        (["demo", "--seed", "18446744073709551600"], "runs past the largest generator seed"),
        (["demo", "--batch", "2.5"], "argument --batch: '2.5' is not an integer"),
        (["train-demo", "--out", "{file}"], "is a file, not a directory"),
        (["train-demo", "--out", "{missing}", "--steps", "x"], "'x' is not an integer"),
        (["solvers", "extra"], "gaussport solvers: error: unrecognized arguments: extra"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(
    tmp_path,  # type: ignore[no-untyped-def]
    args: list[str],
    message: str,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 12, item 9: these raised tracebacks, or failed only after the whole run (--out FILE).
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    places = {"file": tmp_path / "file", "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    words = [a.format(**places) for a in args]
    if words[0] == "demo" and "--out" not in words:
        words += ["--out", str(tmp_path / "out")]
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(words) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"gaussport {words[0]}: error: ") and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_file_system_failure_during_the_run_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not bad input (the arguments passed every check): the disk filled up during the run.
    def full(args) -> int:  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_demo, "_mixture_demo", full)
    assert cli.main(["demo", "--target", "mixture", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == "gaussport demo: error: [Errno 28] No space left on device\n"


def test_a_failed_write_of_the_demo_outputs_leaves_the_old_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Item 9 / item 1: both tables are made before a file is opened, and written atomically, so a
    # failure leaves results.json and results.csv of an earlier run byte for byte (the old code
    # had rewritten results.json and truncated results.csv by then).
    class Unprintable(float):  # JSON writes it (float.__repr__); the CSV writer's repr() fails
        def __repr__(self) -> str:
            raise RuntimeError("cannot format this value")

    @dataclass
    class Run:
        teleport: str
        solver: str = "euler"
        nfe_budget: int = 2
        nfe: int = 2
        error: float = 0.5

        def summary(self) -> dict[str, object]:
            return {"solver": self.solver, "teleport": self.teleport, "trajectory_rms": Unprintable(0.5)}

    settings = {"solvers": ["euler"], "nfes": [2], "teleport": "respace", "sigma_skip": 2.0}
    result = demo.DigitsDemo((Run("none"), Run("respace")), torch.zeros(1), settings, 1.0, 2.0)  # type: ignore[arg-type]
    old = {name: f"{name} of an earlier run\n".encode() for name in ("results.json", "results.csv")}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(RuntimeError, match="cannot format"):
        demo.write_digits_outputs(result, tmp_path, plots=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # no partial or temporary file
    with pytest.raises(ValueError, match="is a file, not a directory"):
        demo.write_digits_outputs(result, tmp_path / "results.csv", plots=False)


# ---------------------------------------------------------------------- the analytic mixture demo
@pytest.mark.slow
def test_mixture_demo_writes_table_and_plot(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    code = cli.main(
        [
            "demo",
            "--target",
            "mixture",
            "--steps",
            "3",
            "6",
            "--batch",
            "8",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "no teleport" in out and "respaced" in out
    png = tmp_path / "demo_error_vs_nfe.png"
    assert png.read_bytes()[:8] == PNG


@pytest.mark.slow
def test_mixture_demo_rows_are_the_direct_solves() -> None:
    # The demo measures through the harness; its rows are the numbers of plain solve/sample calls
    # from the same exact samples at sigma = 80 against a 50-steps-per-unit RK4 reference.
    rows = demo.run_mixture_demo((3, 6), batch=8, seed=1, disable=True)
    target = demo.demo_target()
    x = target.sample(8, 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = gaussport.reference_solve(target, x, (80.0, 0.002, 0.0), steps_per_unit=50)
    warm = {"warm_start": target.moments(), "disable": True}
    for r, n in zip(rows, (3, 6), strict=True):
        sigmas = grids.karras(n, 0.002, 80.0)
        on_grid = max(s for s in sigmas if s <= 10.0)
        runs = (
            gaussport.solve(target, x, sigmas, "heun", disable=True),
            gaussport.sample(target, x, sigmas, "heun", sigma_skip=10.0, teleport="respace", **warm),
            gaussport.sample(target, x, sigmas, "heun", sigma_skip=on_grid, teleport="truncate", **warm),
        )
        assert (r.nfe_plain, r.nfe_respace, r.nfe_truncate) == tuple(sol.nfe for sol in runs)
        errors = [float((sol.x - exact).pow(2).mean().sqrt()) for sol in runs]
        assert [r.error_plain, r.error_respace, r.error_truncate] == pytest.approx(errors, rel=1e-12)


def test_mixture_demo_teleport_beats_plain_heun_at_equal_nfe() -> None:
    rows = demo.run_mixture_demo((6, 8, 12), batch=16, disable=True)
    for r in rows:
        assert r.nfe_respace == r.nfe_plain
        assert r.error_respace < r.error_plain, r


# ---------------------------------------------------------------------- train-demo
def test_train_demo_help_states_time_and_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-demo", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "10-20 minutes on 2 CPU cores" in out and "--steps" in out and "--seed" in out
    assert "directory=DIR" in out and "gaussport demo --model DIR" in out and "DIGITS_MODEL.md" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "bogus"], "argument --device: 'bogus' is not a torch device"),
        (["--steps", "0"], "argument --steps: must be a positive integer; got 0."),
        (["--batch-size", "-1"], "argument --batch-size: must be a positive integer; got -1."),
        (["--held-out-images", "0"], "argument --held-out-images: must be a positive integer; got 0."),
        (["--threads", "0"], "argument --threads: must be a positive integer; got 0."),
        (["--reference-samples", "1"], "argument --reference-samples: must be an integer of at least 2"),
        (["--seed", "-1"], "argument --seed: must be an integer from 0 to"),
    ],
)
def test_train_demo_reports_bad_input(
    tmp_path,  # type: ignore[no-untyped-def]
    args: list[str],
    message: str,
    no_work: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["train-demo", "--out", str(tmp_path / "model"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()  # nothing was trained or written


def test_train_demo_needs_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train-demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the following arguments are required: --out" in err


@pytest.mark.slow
def test_train_demo_writes_a_model_the_loaders_and_the_demo_accept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A tiny run of the real pipeline (2 optimiser steps, held-out losses on 16 images of each
    # split): every file of a release, read back with the same loaders as the shipped model, and the
    # provenance and model card record the command line and the subset.
    from gaussport.digits import load_digits_denoiser, load_digits_gaussian, load_digits_test_set

    out = tmp_path / "model"
    args = ["--steps", "2", "--batch-size", "16", "--classifier-epochs", "1", "--reference-samples", "8"]
    args += ["--held-out-images", "16", "--threads", "1"]  # 2 OpenMP threads crawl on a loaded machine
    assert cli.main(["train-demo", "--out", str(out), *args, "--quiet"]) == 0
    for name in ("digits_denoiser.safetensors", "digits_classifier.safetensors", "digits_gaussian.npz"):
        assert (out / name).is_file()
    provenance = json.loads((out / "digits_provenance.json").read_text())
    assert provenance["command"].startswith("gaussport train-demo --out")
    assert "--steps 2" in provenance["command"] and "1 threads" in provenance["machine"]
    denoiser = provenance["denoiser"]
    assert denoiser["held_out_images"] == 16
    assert all(math.isfinite(denoiser[k]) for k in ("held_out_loss", "held_out_loss_conditional"))
    card = (out / "DIGITS_MODEL.md").read_text()
    assert card.startswith("#") and "(the first 16 images of each split)" in card
    # The card names the functions that wrote and read the files by their current names.
    assert "`gaussport.digits.train_demo_model`" in card and "gaussport.models" not in card
    net, gaussian = load_digits_denoiser(directory=out), load_digits_gaussian(directory=out)
    test = load_digits_test_set(directory=out)
    assert gaussian.shape == (1, 8, 8) and test.images.shape[1:] == (1, 8, 8)
    x = torch.zeros(2, 1, 8, 8)
    assert net(x, torch.full((2,), 1.0)).shape == x.shape


# ---------------------------------------------------------------------- threads (issue 11, item 9)
def test_demo_picks_its_threads_by_the_openmp_wait_policy_and_restores_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The 8x8 network's ops are small: threads that spin between them (OpenMP's default policy)
    # only cost, so the demo runs on one thread unless idle threads sleep (PASSIVE, which the
    # console script sets), where two paid on a busy machine; --threads overrides both. The
    # caller's thread count comes back afterwards.
    seen: list[int] = []

    def fake(args) -> int:  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return 0

    monkeypatch.setattr(cli_demo, "_digits_demo", fake)
    monkeypatch.setattr(cli_demo, "_mixture_demo", fake)
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        assert cli.main(["demo"]) == 0
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
        assert cli.main(["demo", "--target", "mixture"]) == 0
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        assert cli.main(["demo"]) == 0
        assert cli.main(["demo", "--threads", "4"]) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(previous)
    assert seen == [1, min(2, os.cpu_count() or 1), 1, 4]


def test_demo_rejects_a_non_positive_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--threads", "0", "--quiet"]) == 2
    assert "argument --threads: must be a positive integer; got 0." in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def _console_module():  # type: ignore[no-untyped-def]
    path = ROOT / "src" / "_gaussport_console.py"
    spec = importlib.util.spec_from_file_location("_gaussport_console", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_console_script_sets_a_passive_openmp_wait_policy_before_torch_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenMP reads OMP_WAIT_POLICY when torch loads it, so the console script sets it in a module
    # that imports neither torch nor gaussport; a value the user set is kept.
    assert 'gaussport = "_gaussport_console:main"' in (ROOT / "pyproject.toml").read_text()
    code = "import sys; sys.path.insert(0, 'src'); import _gaussport_console; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "'torch'" not in loaded.stdout and "'gaussport'" not in loaded.stdout

    console = _console_module()
    seen: list[str | None] = []
    monkeypatch.setattr(cli, "main", lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")) or 0)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert console.main() == 0
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert console.main() == 0
    assert seen == ["PASSIVE", "ACTIVE"]


# ---------------------------------------------------------------------- `gaussport solvers` (item 10)
def test_solvers_lists_order_cost_a_distinguishing_line_and_the_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["solvers"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split()[0]: b for b in out.strip().split("\n\n")[1:]}
    names = gaussport.solvers.available()
    assert sorted(blocks) == sorted(names)
    described = {}
    for name in names:
        solver, lines = gaussport.solvers.get(name), blocks[name].splitlines()
        head = lines[0]
        assert f"order {solver.order}" in head, head
        cold = f"({solver.cold_start_order} from a cold start)"
        assert (cold in head) == (solver.cold_start_order != solver.order), head
        per_step = solver.evaluations((2.0, 1.0))
        assert f", {per_step} evaluation{'s' if per_step > 1 else ''} per step" in head, head
        body = " ".join(" ".join(line.split()) for line in lines[1:])
        description, found, reference = body.partition("reference: ")
        assert found and reference, f"{name}: no reference"
        described[name] = description
    # Every name says what sets it apart: no two names share their description (ddim, dpmpp_2m,
    # ... are one class with different presets).
    assert len(set(described.values())) == len(names), described
    # The line comes from the registry (gaussport.solvers.summary), with the preset options.
    for name in names:
        assert gaussport.solvers.summary(name) in described[name], name
    assert "DDIM (eta = 0)" in described["ddim"] and "solver_order=1" in described["ddim"]
    assert "second order" in described["dpmpp_3m"] and "third order" in described["dpmpp_3m_fixed"]
    assert "variant='bh2'" in described["unipc_bh2"]
    inverts = {name for name in names if "inverts" in blocks[name].splitlines()[0]}
    assert inverts == set(gaussport.solvers.available(inversion=True))
    assert "2 evaluations per step (1 on a final step to sigma = 0)" in blocks["heun"]
    assert "Karras et al." in blocks["heun"] and "Zhao et al." in blocks["unipc_bh1"]


# ---------------------------------------------------------------------- NFE budgets (item 11)
@pytest.mark.slow
def test_demo_says_when_a_budget_is_adjusted_and_names_outputs_by_the_nfe_used(
    tmp_path,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Heun spends 2n - 1 evaluations on n steps: budget 2 runs NFE 1, budget 4 the grids of budget 3.
    pytest.importorskip("matplotlib")
    args = ["demo", "--solver", "heun", "euler", "--nfe", "2", "3", "4", "--batch", "2"]
    args += ["--frechet-samples", "0", "--reference-steps", "2", "--out", str(tmp_path), "--quiet"]
    with caplog.at_level("WARNING", logger="gaussport"):
        assert cli.main(args) == 0
    out = capsys.readouterr().out
    adjusted = "heun: NFE budget 2 runs NFE 1, the largest grid of heun within it"
    repeated = "heun: NFE budget 4 runs NFE 3, the same grids as budget 3; measured once."
    assert adjusted in out and repeated in out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(adjusted in w for w in warnings) and repeated in warnings
    rows = [
        line.split("|")[1:3]
        for line in out.splitlines()
        if line.startswith("| heun") or line.startswith("| euler")
    ]
    assert [(s.strip(), n.strip()) for s, n in rows] == [
        ("heun", "1"),
        ("heun", "3"),
        ("euler", "2"),
        ("euler", "3"),
        ("euler", "4"),
    ]
    # A grid is named by the NFE its runs used; by the budget where the solvers used different NFEs.
    pngs = sorted(p.name for p in tmp_path.glob("samples_*.png"))
    assert pngs == ["samples_budget2.png", "samples_nfe3.png", "samples_nfe4.png"]
    record = json.loads((tmp_path / "results.json").read_text())
    assert adjusted in " ".join(record["notes"])
    assert sorted(
        (r["solver"], r["nfe_budget"], r["nfe"]) for r in record["evaluations"] if r["teleport"] == "none"
    ) == [
        ("euler", 2, 2),
        ("euler", 3, 3),
        ("euler", 4, 4),
        ("heun", 2, 1),
        ("heun", 3, 3),
    ]


@pytest.mark.slow
def test_demo_summary_with_one_nfe_does_not_claim_a_saving(
    tmp_path,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["demo", "--solver", "heun", "--nfe", "2", "--batch", "2", "--frechet-samples", "0"]
    assert cli.main([*args, "--reference-steps", "2", "--out", str(tmp_path), "--quiet", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "heun: one NFE measured (1)" in out and "NFE <=" not in out
    assert "heun: NFE budget 2 runs NFE 1" in out


def test_demo_rejects_a_budget_too_small_for_one_step_before_any_model_call(
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gaussport.evaluation import Evaluator
    from gaussport.solvers import register, unregister
    from gaussport.solvers.heun import Heun

    @dataclass(frozen=True)
    class TwoEvaluationsAlways(Heun):  # a method whose every step, the last included, costs 2
        def evaluations(self, sigmas) -> int:  # type: ignore[no-untyped-def]
            return 2 * (len(sigmas) - 1)

    def no_reference(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the exact endpoints were computed before the budgets were checked")

    monkeypatch.setattr(Evaluator, "reference", no_reference)
    register("two_evaluations_always")(TwoEvaluationsAlways)
    try:
        out = tmp_path / "out"
        args = ["demo", "--solver", "euler", "two_evaluations_always", "--nfe", "1", "4"]
        assert cli.main([*args, "--quiet", "--out", str(out)]) == 2
    finally:
        unregister("two_evaluations_always")
    err = capsys.readouterr().err
    assert "an NFE budget of 1 is too small for one step of 'two_evaluations_always'" in err
    assert "costs 2 evaluations; give budgets of at least 2" in err
    assert not out.exists()


# ---------------------------------------------------------------------- the Frechet noise (item 13)
def test_frechet_noise_is_one_measured_statement_wherever_it_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The help, the README and the getting-started page quote demo.FRECHET_NOISE (measured over 10
    # seeds) instead of each guessing a spread of their own ("+-1 to 2", "+-1 to 4").
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    texts = {"help": capsys.readouterr().out}
    for page in ("README.md", "docs/getting-started.md"):
        texts[page] = (ROOT / page).read_text()
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert demo.FRECHET_NOISE in flat, where
        assert "+-1 to" not in flat and "+- 1" not in flat, where
    assert "measured over 10 seeds" in demo.FRECHET_NOISE


def test_readme_names_the_cpu_wheels_and_git_ignores_the_demo_output() -> None:
    assert "https://download.pytorch.org/whl/cpu" in (ROOT / "README.md").read_text()
    assert "gaussport-demo/" in (ROOT / ".gitignore").read_text().split()
