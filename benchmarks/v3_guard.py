"""DPM-Solver-v3's guard on the digits network: guarded vs unguarded v3 vs DPM-Solver++(2M).

Trajectory error (RMS relative to the exact endpoint) of ``dpm_solver_v3`` with its defaults (the
warm-start Gaussian's analytic EMS, guarded: docs/ems.md#the-guard), the same with ``guard=False``,
and ``dpmpp_2m``, on Karras grids from sigma 80, without teleport and with a ``respace`` teleport
to sigma 1.5 / 3 / 5. One thread; the load average is recorded. Writes
``benchmarks/results/v3_guard[_quick].{json,md}``.

The guarded/2M ratios carry a 90% paired-bootstrap interval over the seeds (the RMS over a few
hundred seeds is dominated by a handful of them). Usage: ``python benchmarks/v3_guard.py [--quick]
[--seeds N]`` (default 1024 seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import bootstrap_resamples, endpoint_cache_dir

import gaussport.digits
from gaussport._files import atomic_writer

NFES = (4, 5, 6, 8, 10, 12, 15, 20)
LEVELS = (1.5, 3.0, 5.0)
COLUMNS = ("dpmpp_2m", "v3_guarded", "v3_unguarded")


def measure(seeds: int, nfes: tuple[int, ...]) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """``{f"{teleport}_{nfe}": {column: error}}`` for every teleport (``none`` and the levels), and
    the per-seed mean squared errors ``{f"{teleport}_{nfe}_{column}": [seeds]}``."""
    evaluator = gaussport.digits.evaluator(
        seeds=range(seeds), reference_steps=10, cache_dir=str(endpoint_cache_dir())
    )
    reference = evaluator.reference().to(torch.float64)
    results: dict[str, dict[str, float]] = {}
    squares: dict[str, np.ndarray] = {}
    runs = {
        "dpmpp_2m": ("dpmpp_2m", {}),
        "v3_guarded": ("dpm_solver_v3", {}),
        "v3_unguarded": ("dpm_solver_v3", {"guard": False}),
    }
    for level in (None, *LEVELS):
        teleport = {} if level is None else {"teleport": "respace", "sigma_skip": level}
        for nfe in nfes:
            key = f"{level or 'none'}_{nfe}"
            results[key] = {}
            for column, (solver, options) in runs.items():
                evaluation = evaluator.evaluate(solver, nfe, **teleport, **options)
                results[key][column] = evaluation.error
                diff = evaluation.samples.to(torch.float64) - reference
                squares[f"{key}_{column}"] = diff.flatten(1).square().mean(dim=1).numpy()
    return results, squares


def ratio_interval(
    numerator: np.ndarray, denominator: np.ndarray, resamples: int = 2000
) -> tuple[float, float]:
    """5th and 95th percentiles of RMS(numerator)/RMS(denominator) over a paired bootstrap of the
    seeds (numpy PCG64, seed 0)."""
    ratios = []
    for idx in bootstrap_resamples(len(numerator), resamples):
        ratios.append(math.sqrt(numerator[idx].mean() / denominator[idx].mean()))
    lo, hi = np.percentile(ratios, [5, 95])
    return float(lo), float(hi)


def markdown(
    results: dict[str, dict[str, float]], squares: dict[str, np.ndarray], nfes: tuple[int, ...], header: str
) -> str:
    """Per-cell table, then the best level from {1.5, 3, 5} per solver and NFE; guarded / 2M with its
    90% paired-bootstrap interval over the seeds."""
    columns = " | ".join(COLUMNS)
    lines = [header, "", f"| teleport | NFE | {columns} | guarded / 2M | 90% interval |", "|---" * 7 + "|"]
    for key, row in results.items():
        level, nfe = key.rsplit("_", 1)
        cells = " | ".join(f"{row[c]:.4g}" for c in COLUMNS)
        lo, hi = ratio_interval(squares[f"{key}_v3_guarded"], squares[f"{key}_dpmpp_2m"])
        ratio = row["v3_guarded"] / row["dpmpp_2m"]
        lines.append(f"| {level} | {nfe} | {cells} | {ratio:.3f} | {lo:.3f}-{hi:.3f} |")
    lines += ["", "Best level from {1.5, 3, 5} per solver:", ""]
    lines += [f"| NFE | {columns} | guarded / 2M | 90% interval |", "|---" * 6 + "|"]
    for nfe in nfes:
        level_of = {c: min(LEVELS, key=lambda level, c=c: results[f"{level}_{nfe}"][c]) for c in COLUMNS}
        best = {c: results[f"{level_of[c]}_{nfe}"][c] for c in COLUMNS}
        cells = " | ".join(f"{best[c]:.4g} ({level_of[c]:g})" for c in COLUMNS)
        lo, hi = ratio_interval(
            squares[f"{level_of['v3_guarded']}_{nfe}_v3_guarded"],
            squares[f"{level_of['dpmpp_2m']}_{nfe}_dpmpp_2m"],
        )
        lines.append(f"| {nfe} | {cells} | {best['v3_guarded'] / best['dpmpp_2m']:.3f} | {lo:.3f}-{hi:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 seeds, NFE 4, 6, 10")
    parser.add_argument("--seeds", type=int, default=1024, help="seeds 0..N-1 (default 1024)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, nfes = (8, (4, 6, 10)) if args.quick else (args.seeds, NFES)
    start, load = time.perf_counter(), os.getloadavg()[0]
    results, squares = measure(seeds, nfes)
    header = (
        f"Digits network, seeds 0..{seeds - 1}, Karras rho 7 from sigma 80, one thread, "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}, {time.perf_counter() - start:.0f} s."
    )
    stem = Path(__file__).parent / "results" / ("v3_guard_quick" if args.quick else "v3_guard")
    with atomic_writer(stem.with_suffix(".json"), "w") as handle:
        json.dump({"header": header, "results": results}, handle, indent=1)
    with atomic_writer(stem.with_suffix(".md"), "w") as handle:
        handle.write(markdown(results, squares, nfes, header))


if __name__ == "__main__":
    main()
