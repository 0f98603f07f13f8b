"""The `gaussport` command line and the analytic demo."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gaussport import cli, demo


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "solvers" in out and "teleport" in out


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gaussport.cli", "solvers"], capture_output=True, text=True, check=True
    )
    assert "heun" in out.stdout and "order 2" in out.stdout


def test_demo_writes_table_and_plot(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    code = cli.main(["demo", "--steps", "3", "6", "--batch", "8", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "no teleport" in out and "respaced" in out
    png = tmp_path / "demo_error_vs_nfe.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_teleport_beats_plain_heun_at_equal_nfe() -> None:
    rows = demo.run_mixture_demo((6, 8, 12), batch=16, disable=True)
    for r in rows:
        assert r.nfe_respace == r.nfe_plain
        assert r.error_respace < r.error_plain, r


def test_cli_reports_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--solver", "nope", "--steps", "3", "--batch", "2", "--no-plot", "--quiet"]) == 2
    assert "unknown solver 'nope'" in capsys.readouterr().err
