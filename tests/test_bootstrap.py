"""bootstrap.py: the one-line set-up of the README (a virtual environment, torch, gaussport, the demo).

The full installs take minutes and a network, so these tests check the decisions (which torch index,
why) and the commands the script runs (``--dry-run``); the README section "Install and run the
demo" records a real run from a fresh clone.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bootstrap():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "bootstrap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_only_torch_on_linux_without_a_gpu_where_the_cpu_index_answers(bootstrap) -> None:  # type: ignore[no-untyped-def]
    probed: list[str] = []

    def answers(url: str) -> bool:
        probed.append(url)
        return True

    index, why = bootstrap.choose_torch_index(platform="linux", gpu=False, probe=answers)
    assert index == "https://download.pytorch.org/whl/cpu" and "CPU-only" in why
    assert probed == ["https://download.pytorch.org/whl/cpu/torch/"]


def test_falls_back_to_the_default_index_and_says_so(bootstrap) -> None:  # type: ignore[no-untyped-def]
    index, why = bootstrap.choose_torch_index(platform="linux", gpu=False, probe=lambda url: False)
    assert index is None and "does not answer: falling back to the default index" in why


def test_default_index_with_a_gpu_or_off_linux(bootstrap) -> None:  # type: ignore[no-untyped-def]
    never = pytest.fail  # neither case may probe the CPU index
    assert bootstrap.choose_torch_index(platform="linux", gpu=True, probe=never)[0] is None
    assert bootstrap.choose_torch_index(platform="darwin", gpu=False, probe=never)[0] is None
    assert bootstrap.choose_torch_index("cpu", probe=never)[0] == bootstrap.CPU_INDEX
    assert bootstrap.choose_torch_index("default", probe=never)[0] is None
    assert bootstrap.choose_torch_index("https://example.invalid/simple", probe=never)[0] == (
        "https://example.invalid/simple"
    )


def test_demo_creates_a_venv_installs_torch_then_gaussport_and_runs_the_demo(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    cmd = [sys.executable, str(ROOT / "bootstrap.py"), "--torch-index", "cpu", "--dry-run", "demo"]
    out = subprocess.run(
        [*cmd, "--venv", str(venv), "--nfe", "5", "7"], capture_output=True, text=True, check=True
    ).stdout
    steps = [
        line.removeprefix("bootstrap: $ ") for line in out.splitlines() if line.startswith("bootstrap: $ ")
    ]
    py = str(venv / "bin" / "python")
    assert steps == [
        f"{sys.executable} -m venv {venv}",
        f"{py} -m pip install --upgrade pip",
        f"{py} -m pip install torch --index-url https://download.pytorch.org/whl/cpu",
        f"{py} -m pip install torch -e {ROOT}[plot]",
        f"{venv / 'bin' / 'gaussport'} demo --nfe 5 7",
    ]
    assert not venv.exists()  # a dry run runs nothing


def test_ci_installs_through_bootstrap_and_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python3 bootstrap.py install "$work/venv" --extras test,docs' in ci
    for command in (
        "python -m pytest -q",
        "ruff check src tests benchmarks bootstrap.py",
        "mkdocs build --strict",
    ):
        assert command in ci, command
    # Under `set -e` a failing command on the left of `&&` does not stop the script (a lint failure
    # passed .ci/run that way): each check stands on its own line.
    lines = ci.splitlines()
    assert "set -euo pipefail" in lines
    assert "ruff check src tests benchmarks bootstrap.py" in lines
    assert "ruff format --check src tests benchmarks bootstrap.py" in lines
    assert not [line for line in lines if "&&" in line and not line.lstrip().startswith("#")]
