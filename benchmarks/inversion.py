"""Inversion benchmark: the round trip data -> noise -> data against NFE, with and without the teleport.

Editing workflows invert an image to noise along the probability-flow ODE (DDIM inversion, ComfyUI's
unsampler), then sample back from that noise. For every solver that supports inversion
(``gaussport.solvers.available(inversion=True)``) and a budget of NFE evaluations *per direction*:

* **plain**: :func:`gaussport.inversion.invert` along a Karras grid (rho = 7) from 0.002 up to 80,
  then :func:`gaussport.solve` back down the same grid;
* **teleport**: the same NFE with the warm start (the data's Gaussian) and ``teleport="respace"``:
  the solver integrates ``[0.002, sigma_skip]`` with the same number of steps and the Gaussian's
  exact flow covers ``[sigma_skip, 80]`` in both directions (the two flows cancel exactly).

Errors, RMS per coordinate of each sample:

* **round trip**: the sample back at 0.002 against the data point (reconstruction), summarised by
  the median over the samples and the share of samples off by more than ``FAILED`` (they came back
  in another mode of the mixture / as another digit: the RMS over all samples is dominated by them);
* **noise**: the inverted state at 80 against the model's exact inversion (a reference solve with
  many steps), RMS over all samples relative to the RMS of the exact inversion. The teleport replaces
  the model by its Gaussian above ``sigma_skip``, so this error does not vanish with the NFE: it
  measures that approximation.

Targets: an analytic Gaussian mixture (the demo target: exact denoiser, data sampled exactly) and,
unless ``--quick``, the shipped 8x8-digits network on held-out test images (float32).

Usage::

    PYTHONPATH=src python benchmarks/inversion.py            # both targets (see docs/benchmarks.md)
    PYTHONPATH=src python benchmarks/inversion.py --quick    # the mixture only, fewer solvers

Writes a markdown report to stdout and ``<out>/inversion.md``, every number to ``<out>/inversion.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Gaussian, anisotropic_mixture
from gaussport.evaluation import markdown_table
from gaussport.inversion import invert

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
FAMILY = grids.KarrasFamily(7.0)
NFES = (5, 10, 20, 40)
SKIP_SWEEP = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
SWEEP_SOLVERS = ("euler", "heun", "dpmpp_2m", "unipc_bh2")
QUICK_SOLVERS = ("euler", "heun", "dpmpp_2m", "unipc_bh2")
REFERENCE = "unipc_bh1"  # the solver of the reference inversion (log-uniform steps, Target.reference_steps)
FAILED = 0.1  # a round trip off by more than this (RMS per coordinate) came back as something else


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data: torch.Tensor  # x0 (float64 for the mixture, float32 for the network)
    warm_start: Gaussian
    sigma_skip: float  # the teleport level of the main table, fixed before the run
    reference_steps: int  # of the reference inversion (checked against half as many)


def targets(quick: bool) -> list[Target]:
    demo = anisotropic_mixture(dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0)
    data = demo.sample(256, 0.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    out = [
        Target(
            "mixture",
            "analytic Gaussian mixture, d = 32, 6 components (the demo target), exact denoiser, 256 samples",
            demo,
            data,
            demo.moments(),
            2.0,
            2000,
        )
    ]
    if not quick:
        from gaussport.digits import load_digits_denoiser, load_digits_gaussian, load_digits_test_set

        net = load_digits_denoiser()  # float32: 0.05 s per call for 64 images on one thread here
        images = load_digits_test_set().images[:64]
        out.append(
            Target(
                "digits",
                "the shipped 8x8-digits network (float32), 64 held-out test images",
                net,
                images,
                load_digits_gaussian(),
                5.0,
                1000,
            )
        )
    return out


def _rms(a: torch.Tensor) -> float:
    return float(a.pow(2).mean().sqrt())


def _steps(solver: str, nfe: int) -> int:
    """Intervals a budget of ``nfe`` evaluations buys (per direction; no step ends at 0 here)."""
    per_interval = gaussport.solvers.get(solver).evaluations((2.0, 1.0))
    return nfe // per_interval


def round_trip(target: Target, solver: str, nfe: int, sigma_skip: float | None) -> dict[str, Any]:
    n = _steps(solver, nfe)
    down = FAMILY(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)
    up = down[::-1]
    warm = {} if sigma_skip is None else {"warm_start": target.warm_start, "sigma_skip": sigma_skip}
    mode = {} if sigma_skip is None else {"teleport": "respace"}
    noise = invert(target.denoiser, target.data, up, solver, disable=True, **warm, **mode)
    if sigma_skip is None:
        back = gaussport.solve(target.denoiser, noise.x, down, solver, disable=True)
    else:
        back = gaussport.sample(target.denoiser, noise.x, down, solver, disable=True, **warm, **mode)
    per_sample = (back.x - target.data).flatten(1).pow(2).mean(1).sqrt()
    return {
        "nfe_up": noise.nfe,
        "nfe_down": back.nfe,
        "x_noise": noise.x,
        "round_trip": float(per_sample.median()),
        "round_trip_rms": _rms(back.x - target.data),
        "failed": float((per_sample > FAILED).double().mean()),
    }


def reference_noise(target: Target) -> tuple[torch.Tensor, float]:
    """The model's exact inversion at SIGMA_MAX, and its accuracy (against half the steps)."""
    runs = []
    for n in (target.reference_steps // 2, target.reference_steps):
        up = grids.exponential(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)[::-1]
        runs.append(invert(target.denoiser, target.data, up, REFERENCE, disable=True).x)
    return runs[1], _rms(runs[1] - runs[0]) / _rms(runs[1])


def run_target(target: Target, solvers: tuple[str, ...]) -> dict[str, Any]:
    t0 = time.perf_counter()
    z_ref, ref_accuracy = reference_noise(target)
    scale = _rms(z_ref)
    rows: dict[str, Any] = {}
    for solver in solvers:
        rows[solver] = {}
        for nfe in NFES:
            cell = {}
            for label, skip in (("plain", None), ("teleport", target.sigma_skip)):
                r = round_trip(target, solver, nfe, skip)
                cell[label] = {k: v for k, v in r.items() if k != "x_noise"}
                cell[label]["noise"] = _rms(r["x_noise"] - z_ref) / scale
            rows[solver][nfe] = cell
    sweep: dict[str, Any] = {}
    for solver in [s for s in SWEEP_SOLVERS if s in solvers]:
        sweep[solver] = {}
        for skip in SKIP_SWEEP:
            r = round_trip(target, solver, 10, skip)
            sweep[solver][skip] = {k: v for k, v in r.items() if k != "x_noise"}
            sweep[solver][skip]["noise"] = _rms(r["x_noise"] - z_ref) / scale
    return {
        "description": target.description,
        "sigma_skip": target.sigma_skip,
        "reference_accuracy": ref_accuracy,
        "rows": rows,
        "sweep": sweep,
        "seconds": time.perf_counter() - t0,
    }


def _triple(cell: dict[str, float]) -> str:
    return f"{cell['round_trip']:.1e} / {cell['failed']:.0%} / {cell['noise']:.1e}"


def _table(
    rows: dict[str, Any], title: str, cell: Callable[[dict[str, Any], dict[str, Any]], str]
) -> list[str]:
    """A table over solvers x NFE of ``cell(plain, teleport)``, under ``title``."""
    body = [[solver] + [cell(c[n]["plain"], c[n]["teleport"]) for n in NFES] for solver, c in rows.items()]
    return ["", title, "", markdown_table(["solver"] + [f"NFE {n}" for n in NFES], body)]


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Inversion: round trip data -> noise -> data",
        "",
        f"Command: `{meta['command']}`; {meta['machine']}; load average {meta['load']}; "
        f"{meta['seconds']:.0f} s.",
        "",
        f"Karras grids (rho = 7) between {SIGMA_MIN} and {SIGMA_MAX}; NFE per direction. Round trip: "
        "median over the samples of RMS(x back - x0), and the share of samples with RMS > "
        f"{FAILED} (failed: another mode / digit); noise: RMS(inverted state - exact inversion) / "
        "RMS(exact inversion). Teleport: the data's Gaussian, `teleport='respace'` (same NFE).",
    ]
    for name, res in results.items():
        rows = res["rows"]

        lines += [
            "",
            f"## {name}: {res['description']}",
            "",
            f"Teleport level sigma_skip = {res['sigma_skip']}; reference inversion accurate to "
            f"{res['reference_accuracy']:.1e} (relative).",
        ]
        lines += _table(
            rows,
            "Round trip error (median), plain -> teleport (ratio):",
            lambda p, t: (
                f"{p['round_trip']:.1e} -> {t['round_trip']:.1e} ({t['round_trip'] / p['round_trip']:.2f})"
            ),
        )
        lines += _table(
            rows,
            f"Failed round trips (share of samples off by more than {FAILED}), plain -> teleport:",
            lambda p, t: f"{p['failed']:.0%} -> {t['failed']:.0%}",
        )
        lines += _table(
            rows,
            "Noise error (against the model's exact inversion), plain -> teleport:",
            lambda p, t: f"{p['noise']:.1e} -> {t['noise']:.1e}",
        )
        sweep = [
            [solver, _triple(rows[solver][10]["plain"])] + [_triple(cells[s]) for s in SKIP_SWEEP]
            for solver, cells in res["sweep"].items()
        ]
        lines += [
            "",
            "The teleport level at NFE 10 (median round trip / failed / noise error; no teleport first):",
            "",
            markdown_table(["solver", "plain"] + [f"{s:g}" for s in SKIP_SWEEP], sweep),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the mixture only, four solvers")
    parser.add_argument("--out", default="benchmarks/results", help="where to write inversion.md / .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    solvers = QUICK_SOLVERS if args.quick else gaussport.solvers.available(inversion=True)
    results = {t.name: run_target(t, tuple(solvers)) for t in targets(args.quick)}
    meta = {
        "command": "PYTHONPATH=src python benchmarks/inversion.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, CPU",
        "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "seconds": time.perf_counter() - t0,
    }
    text = report(results, meta)
    sys.stdout.write(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "inversion.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "inversion.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
