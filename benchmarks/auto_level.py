"""``sigma_skip="auto"`` against the full sigma_skip sweep on the 8x8-digits model.

For each solver and NFE (Karras rho 7 grid 80 -> 0.002, ``teleport="respace"``) it measures the
trajectory error (RMS distance to the exact endpoint, :func:`gaussport.digits.evaluator`) of every
level in the sweep and of the level :func:`gaussport.tuning.auto_sigma_skip` picks from a probe record
(16 probes x 12 levels, probe seed 10000, disjoint from the reported seeds 0..N-1). With
``--source data`` (default) the probes and the surrogate come from the model's training split (the
surrogate sweep of docs/auto-level.md); ``--source gaussian`` probes the warm start's marginal and
uses the Gaussian-only error model. Acceptance
(docs/auto-level.md): auto error within 10% of the sweep's best, and never worse than no teleport.

Usage::

    PYTHONPATH=src python benchmarks/auto_level.py --quick     # 16 seeds, 2 solvers, 2 NFEs
    PYTHONPATH=src python benchmarks/auto_level.py             # 64 seeds, all cells

Writes ``<out>/auto_level[_quick].md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from _common import endpoint_cache_dir

import gaussport.digits
from gaussport.analytic import anisotropic_mixture
from gaussport.evaluation import Evaluator, markdown_table
from gaussport.tuning import auto_sigma_skip, probe

logger = logging.getLogger("gaussport.benchmarks")

SKIPS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 40.0, 80.0)
SOLVERS = ("dpmpp_2m", "unipc_bh2", "ipndm", "dpm_solver_v3")
NFES = (4, 6, 8, 10, 15, 20)


def training_split() -> torch.Tensor:
    """The digits model's training images (model space, [N, 1, 8, 8]): what it was trained on."""
    from gaussport.digits.files import pixels_to_model
    from gaussport.digits.train import load_sklearn_digits, stratified_split

    pixels, labels = load_sklearn_digits()
    train_idx, _ = stratified_split(labels, 0.2, 0)
    return pixels_to_model(pixels[train_idx]).unsqueeze(1).to(torch.float64)


def error_of(ev, solver: str, nfe: int, skip: float) -> float:
    if skip >= ev.sigma_max:
        return ev.evaluate(solver, nfe, frechet=False).error
    return ev.evaluate(solver, nfe, teleport="respace", sigma_skip=skip, frechet=False).error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 seeds, 2 solvers, NFE 4 and 10")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=None, help="solvers to measure")
    parser.add_argument(
        "--source", choices=("data", "gaussian"), default="data", help="where the probes come from"
    )
    parser.add_argument(
        "--target",
        choices=("digits", "mixture"),
        default="digits",
        help="the digits network, or an analytic mixture with an exact denoiser",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    seeds = 16 if args.quick else 64
    solvers = args.solvers or (SOLVERS[:2] if args.quick else SOLVERS)
    nfes = (4, 10) if args.quick else NFES
    start = time.perf_counter()
    if args.target == "digits":
        ev = gaussport.digits.evaluator(seeds=range(seeds), cache_dir=endpoint_cache_dir(), disable=True)
        data = training_split() if args.source == "data" else None
    else:
        target = anisotropic_mixture(dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0)
        ev = Evaluator(target, target.moments(), shape=(32,), seeds=range(seeds), model_dtype=torch.float64)
        # 2,000 exact draws of the target as its "training data" (seed 10000: disjoint from the reported)
        data = (
            target.sample(2000, 0.0, torch.Generator().manual_seed(10_000)) if args.source == "data" else None
        )
    ev.reference()
    t0 = time.perf_counter()
    record = probe(ev.denoiser, ev.gaussian, data, seed=10_000, cache=False)
    probe_seconds = time.perf_counter() - t0
    rows, cells = [], []
    for solver in solvers:
        for nfe in nfes:
            grid = ev.budget(solver, nfe).grid
            t1 = time.perf_counter()
            level = auto_sigma_skip(ev.denoiser, ev.gaussian, grid, solver, teleport="respace", probes=record)
            auto_seconds = time.perf_counter() - t1
            sweep = {skip: error_of(ev, solver, nfe, skip) for skip in SKIPS}
            auto = error_of(ev, solver, nfe, level)
            best_skip = min(sweep, key=sweep.get)
            best, plain = sweep[best_skip], sweep[80.0]
            cell = {
                "solver": solver,
                "nfe": nfe,
                "auto_level": level,
                "auto_error": auto,
                "best_level": best_skip,
                "best_error": best,
                "plain_error": plain,
                "auto_seconds": auto_seconds,
                "sweep": sweep,
            }
            cells.append(cell)
            ok = auto <= 1.1 * best and auto <= plain
            rows.append(
                [
                    solver,
                    nfe,
                    f"{level:.3g}",
                    f"{best_skip:g}",
                    f"{auto:.4g}",
                    f"{best:.4g}",
                    f"{auto / best:.3f}",
                    f"{auto / plain:.3f}",
                    "yes" if ok else "**no**",
                ]
            )
            logger.info(
                "%s NFE %d: auto %.3g (%.4g) best %g (%.4g) plain %.4g",
                solver,
                nfe,
                level,
                auto,
                best_skip,
                best,
                plain,
            )
    load = os.getloadavg()
    table = markdown_table(
        [
            "solver",
            "NFE",
            "auto level",
            "sweep-best level",
            "auto error",
            "best error",
            "auto/best",
            "auto/none",
            "accepted",
        ],
        rows,
    )
    text = (
        f"{'Digits' if args.target == 'digits' else 'Analytic 32-d 6-component mixture (exact denoiser)'}, "
        f"seeds 0..{seeds - 1}, Karras rho 7 80 -> 0.002, teleport='respace'. Probe: "
        f"{record.evaluations} single-sample evaluations ({record.probes} probes x {len(record.levels)} "
        f"levels, source {record.source}, seed 10000) in {probe_seconds:.2f} s. Load average "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; total {time.perf_counter() - start:.0f} s.\n\n{table}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "auto_level_quick" if args.quick else "auto_level"
    name += ("" if args.source == "data" else "_gaussian") + ("" if args.target == "digits" else "_mixture")
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(
        json.dumps(
            {
                "seeds": seeds,
                "source": args.source,
                "target": args.target,
                "probe": record.to_json(),
                "probe_seconds": probe_seconds,
                "load": load,
                "cells": cells,
            },
            indent=1,
            default=float,
        )
    )
    print(text)


if __name__ == "__main__":
    main()
