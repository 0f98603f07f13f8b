"""The sigma_skip sweep on the trained 8x8-digits model: quality vs teleport level at fixed NFE.

The digits analogue of the paper's sigma_skip heat maps: rows are teleport levels
``sigma_skip`` (the last row, 80 = sigma_max, is the plain solver), columns are NFE budgets; the
teleport is ``teleport="respace"`` (the exact Gaussian flow from 80 to ``sigma_skip``, then the
same NFE re-spaced over ``[0.002, sigma_skip]``), as in the paper's DPM-Solver/UniPC runs. Heun
takes odd budgets (5, 7, 9, 11: ``2n - 1`` evaluations), the single-evaluation solvers 4, 6, 8, 10.
Measured with :func:`gaussport.digits.evaluator` (the harness on the shipped model): trajectory error
on the reported seeds
(primary) and the Frechet distance (fewer seeds and samples than digits_quality.py: its spread is
in the JSON and the markdown). It also reports the warm-start Gaussian's relative velocity error per
level (:func:`gaussport.evaluation.velocity_error` on the held-out digits) and the safe level
(:func:`gaussport.evaluation.safe_level`, tau = 3e-3; docs/choosing.md#choosing-sigma_skip, step 1),
to compare the no-sampling rule with the measured optimum.

Usage::

    PYTHONPATH=src python benchmarks/digits_sigma_skip.py --quick   # ~1 min smoke run
    PYTHONPATH=src python benchmarks/digits_sigma_skip.py           # full run (docs/benchmarks.md)
    PYTHONPATH=src python benchmarks/digits_sigma_skip.py --best ipndm_v --out benchmarks/results

Writes ``<out>/digits_sigma_skip.md``, ``<out>/digits_sigma_skip.json`` and the heat maps
``<out>/digits-sigma-skip-error.png`` and ``<out>/digits-sigma-skip-fd.png``. Without ``--best``
the best solver of ``<out>/digits_quality.json`` (if present) is added to the default solvers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import endpoint_cache_dir

import gaussport.digits
from gaussport.digits import load_digits_test_set
from gaussport.evaluation import Evaluator, markdown_table, plot_heatmap, safe_level, velocity_error

logger = logging.getLogger("gaussport.benchmarks")

SIGMA_SKIPS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)
SOLVERS = ("heun", "dpmpp_2m", "unipc_bh2", "dpm_solver_v3")
NFES_TWO_EVAL = (5, 7, 9, 11)
NFES_ONE_EVAL = (4, 6, 8, 10)
LADDER = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)
# The safe level's threshold on the relative velocity error (docs/choosing.md#choosing-sigma_skip, step 1).
TAU = 3e-3
FULL = {"seeds": 128, "frechet_seeds": 2, "frechet_samples": 200, "skips": SIGMA_SKIPS}
QUICK = {"seeds": 16, "frechet_seeds": 2, "frechet_samples": 100, "skips": (1.0, 2.0, 5.0, 20.0, 80.0)}


def _nfes(ev: Evaluator, solver: str, quick: bool) -> tuple[int, ...]:
    two = ev.budget(solver, 4).nfe < 4  # a two-evaluation solver cannot use an even budget fully
    nfes = NFES_TWO_EVAL if two else NFES_ONE_EVAL
    return nfes[1:3] if quick else nfes


def _best_from_quality(out: Path) -> str | None:
    path = out / "digits_quality.json"
    if not path.is_file():
        return None
    ranking = json.loads(path.read_text()).get("ranking") or []
    return ranking[0] if ranking else None


def sweep(ev: Evaluator, solver: str, nfes: tuple[int, ...], skips: tuple[float, ...], frechet: bool) -> dict:
    """Trajectory error and FD per (sigma_skip, NFE); ``sigma_skip = sigma_max`` is the plain solver."""
    error = np.full((len(skips), len(nfes)), math.nan)
    fd = np.full_like(error, math.nan)
    fd_std = np.full_like(error, math.nan)
    used = np.zeros(error.shape, dtype=int)
    for i, skip in enumerate(skips):
        for j, nfe in enumerate(nfes):
            plain = skip >= ev.sigma_max
            e = ev.evaluate(
                solver,
                nfe,
                teleport="none" if plain else "respace",
                sigma_skip=None if plain else skip,
                frechet=frechet,
            )
            error[i, j], used[i, j] = e.error, e.nfe
            if e.frechet is not None:
                fd[i, j], fd_std[i, j] = e.frechet.mean, e.frechet.std
    return {"nfe": list(nfes), "error": error, "frechet": fd, "frechet_std": fd_std, "nfe_used": used}


def table(
    values: np.ndarray, skips: tuple[float, ...], nfes: list[int], spread: np.ndarray | None = None
) -> str:
    best = np.nanargmin(values, axis=0)
    rows = []
    for i, skip in enumerate(skips):
        cells: list[Any] = [f"{skip:g}" + (" (none)" if skip >= 80.0 else "")]
        for j in range(len(nfes)):
            v = values[i, j]
            txt = f"{v:.3g}" if spread is None else f"{v:.3g} ± {spread[i, j]:.2g}"
            cells.append(f"**{txt}**" if best[j] == i else txt)
        rows.append(cells)
    return markdown_table(["sigma_skip \\ NFE", *[str(n) for n in nfes]], rows)


def heatmaps(results: dict[str, dict], skips: tuple[float, ...], key: str, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping %s", path)
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results), 0.9 + 0.42 * len(skips)), dpi=110)
    axes = np.atleast_1d(axes)
    labels = [f"{s:g}" + (" (none)" if s >= 80.0 else "") for s in skips]
    for ax, (solver, r) in zip(axes, results.items(), strict=True):
        plot_heatmap(r[key], labels, r["nfe"], path, title=solver, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 solvers, 2 NFE, 5 levels (~1 min)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the tables, JSON and plots")
    parser.add_argument("--solvers", nargs="*", help=f"solvers (default: {' '.join(SOLVERS)} + --best)")
    parser.add_argument("--best", help="one more solver (default: the best of <out>/digits_quality.json)")
    parser.add_argument("--no-frechet", action="store_true", help="trajectory error only")
    parser.add_argument("--reference-steps", type=int, default=10, help="RK4 steps per unit of lambda")
    parser.add_argument(
        "--cache-dir", default=str(endpoint_cache_dir()), help="exact-endpoint cache ('' = none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    solvers = list(args.solvers or (SOLVERS[:2] if args.quick else SOLVERS))
    best = args.best or (None if args.solvers else _best_from_quality(out))
    if best and best not in solvers:
        solvers.append(best)
    start = time.perf_counter()
    ev = gaussport.digits.evaluator(
        seeds=range(cfg["seeds"]),
        reference_steps=args.reference_steps,
        frechet_seeds=range(2_000_000, 2_000_000 + cfg["frechet_seeds"]),
        frechet_samples=cfg["frechet_samples"],
        cache_dir=args.cache_dir or None,
        device=args.device,
    )
    ev.reference()
    ladder = velocity_error(
        ev.denoiser, ev.gaussian, load_digits_test_set().images, LADDER, repeats=4, seed=3_000_000
    )
    safe = safe_level(ladder, TAU)
    logger.info("velocity error ladder: %s; safe level (tau %g): %g", ladder, TAU, safe)
    results = {}
    for s in solvers:
        results[s] = sweep(ev, s, _nfes(ev, s, args.quick), cfg["skips"], frechet=not args.no_frechet)
        logger.info("%s done [%.0f s]", s, time.perf_counter() - start)
    skips = cfg["skips"]
    lines = [
        "# Digits: the sigma_skip sweep",
        "",
        "Command: `PYTHONPATH=src python benchmarks/digits_sigma_skip.py"
        f"{' --quick' if args.quick else ''}`; "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"device {args.device}; wall time {time.perf_counter() - start:.0f} s.",
        "",
        f"Trajectory error on {cfg['seeds']} seeds (RK4 endpoints, {args.reference_steps} steps per unit); "
        f"FD over {cfg['frechet_seeds']} seeds x {cfg['frechet_samples']} samples (mean ± std). "
        "Rows: teleport level (`respace`); 80 = no teleport. Bold: best in the column.",
        "",
        "Relative velocity error of the warm-start Gaussian, mean `|D - D_G| / |x - D|` over probes "
        "`x = x0 + sigma eps` (the 359 held-out digits x 4 noise draws; "
        "docs/choosing.md#choosing-sigma_skip, step 1):",
        "",
        markdown_table(
            ["sigma", *[f"{lv:g}" for lv in ladder]], [["error", *[f"{v:.2g}" for v in ladder.values()]]]
        ),
        "",
        f"Safe level (lowest level from which on the error stays <= {TAU:g}): **{safe:g}**.",
        "",
    ]
    for s, r in results.items():
        lines += [f"## `{s}`", "", "Trajectory error:", "", table(r["error"], skips, r["nfe"]), ""]
        if not args.no_frechet:
            lines += ["Frechet distance:", "", table(r["frechet"], skips, r["nfe"], r["frechet_std"]), ""]
    text = "\n".join(lines)
    (out / "digits_sigma_skip.md").write_text(text + "\n")
    record = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "reference_steps": args.reference_steps,
        "seconds": time.perf_counter() - start,
        "velocity_error": {f"{k:g}": v for k, v in ladder.items()},
        "safe_level": safe,
        "tau": TAU,
        "results": {
            s: {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in r.items()}
            for s, r in results.items()
        },
    }
    (out / "digits_sigma_skip.json").write_text(json.dumps(record, indent=1) + "\n")
    heatmaps(
        results,
        skips,
        "error",
        out / "digits-sigma-skip-error.png",
        "trajectory error (RMS to the exact endpoint)",
    )
    if not args.no_frechet:
        fd_title = f"Frechet distance ({cfg['frechet_seeds']} seeds x {cfg['frechet_samples']} samples)"
        heatmaps(results, skips, "frechet", out / "digits-sigma-skip-fd.png", fd_title)
    print(text)
    logger.info("wrote %s (%.0f s)", out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
