"""Set up gaussport from a fresh clone with nothing but Python 3.10+, in one command.

    python3 bootstrap.py demo [DEMO OPTIONS]
        creates .venv (once), installs torch and gaussport with the plot extra into it, and runs
        ``gaussport demo`` with the options given (``python3 bootstrap.py demo --help`` lists them).

    python3 bootstrap.py install DIR [--extras test,docs] [--torch SPEC ...]
        creates a virtual environment in DIR and installs torch and gaussport (editable) with the
        extras; .ci/run, the test suite's one command, uses it.

Torch comes from PyTorch's CPU-only wheel index when the machine is Linux without an NVIDIA GPU
(PyPI's Linux wheels are CUDA builds: a ~6 GB environment instead of ~1 GB) and that index answers;
otherwise from the default index, and the script says which and why. ``--torch-index`` overrides
the choice. Only the standard library is used, so this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
MIN_PYTHON = (3, 10)


def say(message: str) -> None:
    print(f"bootstrap: {message}", flush=True)


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver with at least one GPU (the CUDA wheels would use it)."""
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def reachable(url: str, timeout: float = 15.0) -> bool:
    """Whether ``url`` answers (a quick probe, so an unreachable index costs seconds, not pip's retries)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (OSError, ValueError):
        return False


def choose_torch_index(
    choice: str = "auto",
    *,
    platform: str = sys.platform,
    gpu: bool | None = None,
    probe: Callable[[str], bool] = reachable,
) -> tuple[str | None, str]:
    """The index to install torch from (``None``: pip's default) and why.

    ``choice``: ``"auto"`` (the CPU-only index on Linux without an NVIDIA GPU, when it answers),
    ``"cpu"`` (that index, no probe), ``"default"`` (pip's configured index) or an index URL;
    ``gpu`` and ``probe`` replace the detection and the probe (tests).
    """
    if choice == "default":
        return None, "torch from the default index (--torch-index default)"
    if choice == "cpu":
        return CPU_INDEX, f"CPU-only torch from {CPU_INDEX} (--torch-index cpu)"
    if choice != "auto":
        return choice, f"torch from {choice} (--torch-index)"
    if not platform.startswith("linux"):
        return None, "torch from the default index (its wheels for this platform have no CUDA libraries)"
    if gpu if gpu is not None else has_nvidia_gpu():
        return None, "an NVIDIA GPU is present: torch with CUDA from the default index"
    if probe(f"{CPU_INDEX}/torch/"):
        return CPU_INDEX, f"no NVIDIA GPU: CPU-only torch from {CPU_INDEX} (about 1 GB instead of 6)"
    return None, (
        f"no NVIDIA GPU, but {CPU_INDEX} does not answer: falling back to the default index "
        "(torch with CUDA libraries, about 6 GB; it runs on the CPU all the same)"
    )


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


def install_plan(venv: Path, extras: list[str], torch_specs: list[str], index: str | None) -> list[list[str]]:
    """The pip commands that install torch and gaussport into ``venv`` (after it is created)."""
    py = str(venv_python(venv))
    torch_cmd = [py, "-m", "pip", "install", *torch_specs]
    if index is not None:
        torch_cmd += ["--index-url", index]
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    return [
        [py, "-m", "pip", "install", "--upgrade", "pip"],  # editable installs need pip >= 21.3
        torch_cmd,
        # The torch specs again so that pins hold; a CPU wheel satisfies them (2.x.y+cpu == 2.x.y).
        [py, "-m", "pip", "install", *torch_specs, "-e", target],
    ]


def run(cmd: list[str], dry_run: bool) -> None:
    say("$ " + " ".join(cmd))
    if not dry_run:
        subprocess.run(cmd, check=True)


def install(
    venv: Path,
    extras: list[str],
    torch_specs: list[str],
    torch_index: str,
    *,
    dry_run: bool = False,
    reuse: bool = False,
) -> None:
    """Create ``venv`` and install torch and gaussport into it (skipped when ``reuse`` and up to date)."""
    stamp = venv / ".gaussport-bootstrap"
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + repr((extras, torch_specs, torch_index)).encode()
    ).hexdigest()
    if reuse and stamp.is_file() and stamp.read_text().strip() == wanted:
        say(f"{venv} is up to date (delete it to reinstall)")
        return
    index, why = choose_torch_index(torch_index)
    say(why)
    if not venv_python(venv).exists():
        run([sys.executable, "-m", "venv", str(venv)], dry_run)
    for cmd in install_plan(venv, extras, torch_specs, index):
        run(cmd, dry_run)
    if not dry_run:
        stamp.write_text(wanted + "\n")


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < MIN_PYTHON:
        print(
            f"bootstrap: gaussport needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is "
            f"{sys.version.split()[0]}. Run this script with a newer python3.",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog="python3 bootstrap.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-index", default="auto", help="auto (default), cpu, default or an index URL")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="set up .venv and run `gaussport demo`", add_help=False)
    demo.add_argument("--venv", default=str(ROOT / ".venv"), help="the virtual environment (default .venv)")
    inst = sub.add_parser("install", help="create a virtual environment and install gaussport into it")
    inst.add_argument("venv", help="the virtual environment to create")
    inst.add_argument("--extras", default="", help="comma-separated extras, e.g. test,docs")
    inst.add_argument("--torch", nargs="+", default=["torch"], metavar="SPEC", help="torch requirements")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "install":
            if rest:
                parser.error(f"unrecognised arguments: {' '.join(rest)}")
            extras = [e for e in args.extras.split(",") if e]
            install(Path(args.venv), extras, args.torch, args.torch_index, dry_run=args.dry_run)
            return 0
        venv = Path(args.venv)
        install(venv, ["plot"], ["torch"], args.torch_index, dry_run=args.dry_run, reuse=True)
        exe = venv_python(venv).parent / ("gaussport.exe" if os.name == "nt" else "gaussport")
        cmd = [str(exe), "demo", *rest]
        say("$ " + " ".join(cmd))
        return 0 if args.dry_run else subprocess.call(cmd)
    except subprocess.CalledProcessError as exc:
        hint = ""
        if exc.cmd[1:3] == ["-m", "venv"]:
            hint = " (on Debian/Ubuntu: apt install python3-venv)"
        print(f"bootstrap: failed: {' '.join(map(str, exc.cmd))}{hint}", file=sys.stderr)
        return exc.returncode or 1


if __name__ == "__main__":
    raise SystemExit(main())
