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
    PYTHONPATH=src python benchmarks/auto_level.py             # 1024 seeds, all cells

Writes ``<out>/auto_level[_quick].md``, ``.json`` and the per-seed squared errors
``_per_seed.npz`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import bootstrap_resamples, endpoint_cache_dir

import gaussport.digits
from gaussport.analytic import anisotropic_mixture
from gaussport.evaluation import Evaluator, markdown_table
from gaussport.tuning import auto_sigma_skip, probe
from gaussport.tuning.auto import surrogate_form

logger = logging.getLogger("gaussport.benchmarks")

SKIPS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 40.0, 80.0)
SOLVERS = ("dpmpp_2m", "unipc_bh2", "ipndm", "dpm_solver_v3")
NFES = (4, 6, 8, 10, 15, 20)
# The analytic targets of benchmarks/solvers.py (same constructors and seeds).
MIXTURES = {
    "mixture": lambda: anisotropic_mixture(
        dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0
    ),
    "hard-mixture": lambda: anisotropic_mixture(
        dim=1024, n_components=10, rank=16, spread=2.0, eigenvalue_range=(1e-4, 0.3), seed=1
    ),
}
DESCRIPTIONS = {
    "digits": "Digits",
    "mixture": "Analytic 32-d 6-component mixture (exact denoiser)",
    "hard-mixture": "Analytic 1024-d 10-component mixture, rank 16 + isotropic 1e-4 (exact denoiser)",
}


def training_split() -> torch.Tensor:
    """The digits model's training images (model space, [N, 1, 8, 8]): what it was trained on."""
    from gaussport.digits.files import pixels_to_model
    from gaussport.digits.train import load_sklearn_digits, stratified_split

    pixels, labels = load_sklearn_digits()
    train_idx, _ = stratified_split(labels, 0.2, 0)
    return pixels_to_model(pixels[train_idx]).unsqueeze(1).to(torch.float64)


def per_seed_squares(ev, reference: torch.Tensor, solver: str, nfe: int, skip: float) -> np.ndarray:
    """Per seed, the mean squared coordinate error of the endpoint (the trajectory error is the
    square root of their mean)."""
    if skip >= ev.sigma_max:
        samples = ev.evaluate(solver, nfe, frechet=False).samples
    else:
        samples = ev.evaluate(solver, nfe, teleport="respace", sigma_skip=skip, frechet=False).samples
    diff = samples.to(torch.float64) - reference.to(torch.float64)
    return diff.flatten(1).square().mean(dim=1).numpy()


def bootstrap(squares: dict[float, np.ndarray], auto: np.ndarray, resamples: int = 2000) -> dict[str, float]:
    """Paired bootstrap over seeds of the acceptance: the sweep's best and the auto level's error are
    recomputed on each resample of the seeds (seed 0 of numpy's PCG64).

    Returns the 5th/50th/95th percentiles of auto/best and the fraction of resamples in which the auto
    level is accepted (within 10% of the resample's best level and not worse than no teleport)."""
    levels = sorted(squares)
    table = np.stack([squares[level] for level in levels])  # [levels, seeds]
    plain = table[levels.index(max(levels))]
    ratios, accepted = [], 0
    for idx in bootstrap_resamples(len(auto), resamples):
        errors = np.sqrt(table[:, idx].mean(axis=1))
        a = math.sqrt(auto[idx].mean())
        ratios.append(a / errors.min())
        accepted += a <= 1.1 * errors.min() and a <= math.sqrt(plain[idx].mean())
    lo, mid, hi = np.percentile(ratios, [5, 50, 95])
    return {
        "ratio_p05": float(lo),
        "ratio_p50": float(mid),
        "ratio_p95": float(hi),
        "accepted": accepted / resamples,
    }


def error_of(squares: np.ndarray, statistic: str) -> np.ndarray:
    """The error over the last axis (seeds) of per-seed squared errors: ``"rms"``, the trajectory
    error the acceptance uses, or ``"mean"``, the mean per-seed distance, less carried by the few
    seeds whose sample changes mode (the *typical* seed's error)."""
    if statistic == "rms":
        return np.sqrt(squares.mean(axis=-1))
    if statistic == "mean":
        return np.sqrt(squares).mean(axis=-1)
    raise ValueError(f"statistic must be 'rms' or 'mean'; got {statistic!r}")


def judged_by(squares: dict[float, np.ndarray], auto: np.ndarray, statistic: str) -> dict[str, Any]:
    """The acceptance (within 10% of the sweep's best, not worse than no teleport) under ``statistic``:
    ``{"accepted", "best_level", "auto_over_best", "auto_over_none"}``."""
    errors = {level: float(error_of(v, statistic)) for level, v in squares.items()}
    a = float(error_of(auto, statistic))
    best = min(errors, key=errors.get)
    plain = errors[max(errors)]
    return {
        "accepted": bool(a <= 1.1 * errors[best] and a <= plain),
        "best_level": best,
        "auto_over_best": a / errors[best],
        "auto_over_none": a / plain,
    }


def split_half(squares: dict[float, np.ndarray], splits: int = 200, statistic: str = "rms") -> float:
    """How often the sweep itself, measured on one random half of the seeds, picks a level that is
    accepted on the other half: the noise ceiling of the acceptance for any rule (numpy PCG64, seed 1).

    A level chosen from the model's own exact sweep on 512 independent seeds is the best any rule that
    does not see the reported seeds can do; where it is accepted rarely, the 1,024-seed RMS cannot
    tell the levels apart (a few seeds whose sample changes mode carry most of the squared error).
    ``statistic`` as in :func:`error_of`."""
    rng = np.random.default_rng(1)
    levels = sorted(squares)
    table = np.stack([squares[level] for level in levels])
    top = levels.index(max(levels))
    n = table.shape[1]
    accepted = 0
    for _ in range(splits):
        perm = rng.permutation(n)
        half_a, half_b = perm[: n // 2], perm[n // 2 :]
        pick = int(np.argmin(error_of(table[:, half_a], statistic)))
        on_b = error_of(table[:, half_b], statistic)
        accepted += on_b[pick] <= 1.1 * on_b.min() and on_b[pick] <= on_b[top]
    return accepted / splits


def typical_misses(cells: list[dict[str, Any]]) -> str:
    """``"; missed: solver NFE at auto level (best level, auto/best), ..."`` for the typical seed."""
    missed = [
        f"{c['solver']} {c['nfe']} at {c['auto_level']:.3g} ({c['typical_seed']['best_level']:g}, "
        f"{c['typical_seed']['auto_over_best']:.2f}x)"
        for c in cells
        if not c["typical_seed"]["accepted"]
    ]
    return "; missed: " + ", ".join(missed) if missed else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 seeds, 2 solvers, NFE 4 and 10")
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=None, help="solvers to measure")
    parser.add_argument(
        "--source", choices=("data", "gaussian"), default="data", help="where the probes come from"
    )
    parser.add_argument(
        "--surrogate",
        choices=("auto", "departure", "mixture"),
        default="auto",
        help="the surrogate of the sweep (auto_sigma_skip's surrogate=): auto (default; chosen from the "
        "probe record), departure or mixture (docs/auto-level.md#which-surrogate)",
    )
    parser.add_argument(
        "--target",
        choices=("digits", *MIXTURES),
        default="digits",
        help="the digits network, or an analytic mixture of benchmarks/solvers.py with an exact denoiser "
        "(mixture: d = 32, 6 components; hard-mixture: d = 1024, 10 components of rank 16)",
    )
    parser.add_argument(
        "--seeds", type=int, default=1024, help="reported seeds 0..N-1 (default 1024; 16 with --quick)"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a _per_seed.npz of an earlier run on the same target and seeds: its sweep levels are "
        "read instead of run (the sweep does not depend on the rule; only the auto levels are run)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    seeds = 16 if args.quick else args.seeds
    solvers = args.solvers or (SOLVERS[:2] if args.quick else SOLVERS)
    nfes = (4, 10) if args.quick else NFES
    start = time.perf_counter()
    if args.target == "digits":
        ev = gaussport.digits.evaluator(seeds=range(seeds), cache_dir=endpoint_cache_dir(), disable=True)
        data = training_split() if args.source == "data" else None
    else:
        target = MIXTURES[args.target]()
        ev = Evaluator(
            target, target.moments(), shape=target.shape, seeds=range(seeds), model_dtype=torch.float64
        )
        # 2,000 exact draws of the target as its "training data" (seed 10000: disjoint from the reported)
        data = (
            target.sample(2000, 0.0, torch.Generator().manual_seed(10_000)) if args.source == "data" else None
        )
    reference = ev.reference()
    t0 = time.perf_counter()
    record = probe(ev.denoiser, ev.gaussian, data, seed=10_000, cache=False)
    form = surrogate_form(record) if args.surrogate == "auto" else args.surrogate
    probe_seconds = time.perf_counter() - t0
    rows, cells = [], []
    earlier = dict(np.load(args.reuse)) if args.reuse is not None else {}

    def squares_of(solver: str, nfe: int, skip: float) -> np.ndarray:
        key = f"{solver}|{nfe}|{skip:g}"
        if key in earlier and len(earlier[key]) == seeds:
            return earlier[key]
        return per_seed_squares(ev, reference, solver, nfe, skip)

    arrays: dict[str, np.ndarray] = {}
    for solver in solvers:
        for nfe in nfes:
            grid = ev.budget(solver, nfe).grid
            t1 = time.perf_counter()
            level = auto_sigma_skip(
                ev.denoiser, ev.gaussian, grid, solver, teleport="respace", probes=record, surrogate=form
            )
            auto_seconds = time.perf_counter() - t1
            squares = {skip: squares_of(solver, nfe, skip) for skip in SKIPS}
            auto_squares = per_seed_squares(ev, reference, solver, nfe, level)
            sweep = {skip: math.sqrt(v.mean()) for skip, v in squares.items()}
            auto = math.sqrt(auto_squares.mean())
            best_skip = min(sweep, key=sweep.get)
            best, plain = sweep[best_skip], sweep[80.0]
            spread = bootstrap(squares, auto_squares)
            ceiling = split_half(squares)
            arrays[f"{solver}|{nfe}|auto"] = auto_squares
            arrays.update({f"{solver}|{nfe}|{skip:g}": v for skip, v in squares.items()})
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
                "bootstrap": spread,
                "split_half_oracle": ceiling,
                "typical_seed": {
                    **judged_by(squares, auto_squares, "mean"),
                    "split_half_oracle": split_half(squares, statistic="mean"),
                },
                "median_seed_error": {
                    f"{skip:g}": float(np.sqrt(np.median(v))) for skip, v in squares.items()
                },
            }
            cells.append(cell)
            ok = auto <= 1.1 * best and auto <= plain
            cell["accepted"] = bool(ok)
            rows.append(
                [
                    solver,
                    nfe,
                    f"{level:.3g}",
                    f"{best_skip:g}",
                    f"{auto:.4g}",
                    f"{best:.4g}",
                    f"{auto / best:.3f}",
                    f"{spread['ratio_p05']:.2f}-{spread['ratio_p95']:.2f}",
                    f"{spread['accepted']:.2f}",
                    f"{ceiling:.2f}",
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
            "auto/best 90% (bootstrap)",
            "P(accepted)",
            "P(oracle accepted)",
            "auto/none",
            "accepted",
        ],
        rows,
    )
    text = (
        f"{DESCRIPTIONS[args.target]}, "
        f"seeds 0..{seeds - 1}, Karras rho 7 80 -> 0.002, teleport='respace'. Probe: "
        f"{record.evaluations} single-sample evaluations ({record.probes} probes x {len(record.levels)} "
        f"levels, source {record.source}, seed 10000) in {probe_seconds:.2f} s; surrogate {args.surrogate}"
        + (f" ({form} form)" if args.surrogate == "auto" else " form")
        + ". Load average "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; total {time.perf_counter() - start:.0f} s"
        + (
            ""
            if args.reuse is None
            else " (the sweep levels read from an earlier run of this script, same seeds)"
        )
        + f".\n\n{table}\n"
        f"\nAccepted in {sum(c['accepted'] for c in cells)} of {len(cells)} cells; mean P(accepted) "
        f"{np.mean([c['bootstrap']['accepted'] for c in cells]):.2f}; the split-half oracle's mean "
        f"{np.mean([c['split_half_oracle'] for c in cells]):.2f} (expected cells accepted "
        f"{sum(c['split_half_oracle'] for c in cells):.1f}).\n"
        "\nThe typical seed (the same acceptance on the mean per-seed distance instead of the RMS, "
        "less carried by the seeds whose sample changes mode): accepted in "
        f"{sum(c['typical_seed']['accepted'] for c in cells)} of {len(cells)} cells; the split-half "
        f"oracle's expected count {sum(c['typical_seed']['split_half_oracle'] for c in cells):.1f}"
        + typical_misses(cells)
        + ".\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "auto_level_quick" if args.quick else "auto_level"
    name += (
        ("" if args.source == "data" else "_gaussian")
        + ("" if args.surrogate == "auto" else f"_{args.surrogate}-form")
        + ("" if args.target == "digits" else "_" + args.target.replace("-", "_"))
    )
    (args.out / f"{name}.md").write_text(text)
    np.savez_compressed(args.out / f"{name}_per_seed.npz", **arrays)
    (args.out / f"{name}.json").write_text(
        json.dumps(
            {
                "seeds": seeds,
                "source": args.source,
                "surrogate": args.surrogate,
                "surrogate_form": form,
                "target": args.target,
                "probe": record.to_json(),
                "probe_seconds": probe_seconds,
                "sweep_reused_from": None if args.reuse is None else str(args.reuse),
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
