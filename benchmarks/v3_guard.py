"""DPM-Solver-v3's guard on the digits network: guarded vs unguarded v3 vs DPM-Solver++(2M).

Trajectory error (RMS relative to the exact endpoint) of ``dpm_solver_v3`` with its defaults (the
warm-start Gaussian's analytic EMS, guarded: docs/ems.md#the-guard), the same with ``guard=False``,
and ``dpmpp_2m``, on Karras grids from sigma 80, without teleport and with a ``respace`` teleport
to sigma 1.5 / 3 / 5. One thread; the load average is recorded. Writes
``benchmarks/results/v3_guard[_quick].{json,md}``.

Usage: ``python benchmarks/v3_guard.py [--quick] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from _common import endpoint_cache_dir

import gaussport.digits
from gaussport._files import atomic_writer

NFES = (4, 5, 6, 8, 10, 12, 15, 20)
LEVELS = (1.5, 3.0, 5.0)
COLUMNS = ("dpmpp_2m", "v3_guarded", "v3_unguarded")


def measure(seeds: int, nfes: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """``{f"{teleport}_{nfe}": {column: error}}`` for every teleport (``none`` and the levels)."""
    evaluator = gaussport.digits.evaluator(
        seeds=range(seeds), reference_steps=10, cache_dir=str(endpoint_cache_dir())
    )
    evaluator.reference()
    results: dict[str, dict[str, float]] = {}
    for level in (None, *LEVELS):
        teleport = {} if level is None else {"teleport": "respace", "sigma_skip": level}
        for nfe in nfes:
            results[f"{level or 'none'}_{nfe}"] = {
                "dpmpp_2m": evaluator.evaluate("dpmpp_2m", nfe, **teleport).error,
                "v3_guarded": evaluator.evaluate("dpm_solver_v3", nfe, **teleport).error,
                "v3_unguarded": evaluator.evaluate("dpm_solver_v3", nfe, guard=False, **teleport).error,
            }
    return results


def markdown(results: dict[str, dict[str, float]], nfes: tuple[int, ...], header: str) -> str:
    """Per-cell table, then the best level from {1.5, 3, 5} per solver and NFE."""
    lines = [header, "", "| teleport | NFE | " + " | ".join(COLUMNS) + " | guarded / 2M |", "|---" * 6 + "|"]
    for key, row in results.items():
        level, nfe = key.rsplit("_", 1)
        cells = " | ".join(f"{row[c]:.4g}" for c in COLUMNS)
        lines.append(f"| {level} | {nfe} | {cells} | {row['v3_guarded'] / row['dpmpp_2m']:.3f} |")
    lines += ["", "Best level from {1.5, 3, 5} per solver:", ""]
    lines += ["| NFE | " + " | ".join(COLUMNS) + " | guarded / 2M |", "|---" * 5 + "|"]
    for nfe in nfes:
        best = {c: min(results[f"{level}_{nfe}"][c] for level in LEVELS) for c in COLUMNS}
        cells = " | ".join(f"{best[c]:.4g}" for c in COLUMNS)
        lines.append(f"| {nfe} | {cells} | {best['v3_guarded'] / best['dpmpp_2m']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 seeds, NFE 4, 6, 10")
    parser.add_argument("--seeds", type=int, default=128, help="seeds 0..N-1 (default 128)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, nfes = (8, (4, 6, 10)) if args.quick else (args.seeds, NFES)
    start, load = time.perf_counter(), os.getloadavg()[0]
    results = measure(seeds, nfes)
    header = (
        f"Digits network, seeds 0..{seeds - 1}, Karras rho 7 from sigma 80, one thread, "
        f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}, {time.perf_counter() - start:.0f} s."
    )
    stem = Path(__file__).parent / "results" / ("v3_guard_quick" if args.quick else "v3_guard")
    with atomic_writer(stem.with_suffix(".json"), "w") as handle:
        json.dump({"header": header, "results": results}, handle, indent=1)
    with atomic_writer(stem.with_suffix(".md"), "w") as handle:
        handle.write(markdown(results, nfes, header))


if __name__ == "__main__":
    main()
