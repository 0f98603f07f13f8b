"""The tuned sampling recipe on the 8x8-digits model: trajectory error vs NFE against the baselines.

Measured with :func:`gaussport.digits.evaluator` on the *reported* seeds (0..1023; the recipe was
tuned on seeds 10000.. and validated on 20000..: disjoint), exact endpoints by RK4 in lambda (10
steps per unit, shared with digits_quality.py through the endpoint cache):

* **recipe**: every entry of the recipe (default: the shipped one,
  :func:`gaussport.digits.load_digits_recipe`) -- the exact Gaussian flow from 80 to the entry's
  level, then the solver on the entry's grid;
* (a) **k-diffusion** 0.1.1's deterministic samplers at NFE 10 on the Karras grid (rho 7, 80 ->
  0.002, then 0) their gaussport counterparts use (as digits_quality.py runs them): the best one;
* (b) **our best no-teleport solver at NFE 10**: every registered single-evaluation solver (and
  Heun at 9) on the same Karras grid, no teleport (DPM-Solver-v3 with the Gaussian's analytic EMS);
* (c) **best Karras-family teleport**: per solver and NFE, the Karras grid (teleport level and rho
  chosen jointly on the tuning seeds, recorded in the recipe's provenance) -- the recipe's cheap
  fallback ``method="family"``;
* **Frechet distance** (digits FD: the shipped classifier's features against the held-out split,
  mean +- sample std over Frechet seeds) of the best recipe solver at NFE 5 and of the best
  no-teleport solver at NFE 10.

Acceptance (issue 14): the recipe reaches (a) at <= 4 NFE and (b) at <= 5 NFE; its FD at NFE 5 lies
within the metric's spread of the no-teleport NFE-10 value.

Usage::

    PYTHONPATH=src python benchmarks/digits_recipe.py --quick     # 32 seeds, 2 Frechet seeds (~2 min)
    PYTHONPATH=src python benchmarks/digits_recipe.py             # 1024 seeds, 5 Frechet seeds

Writes ``<out>/digits_recipe.md``, ``<out>/digits_recipe.json`` and the plot ``--plot``
(default ``docs/img/digits-recipe.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import endpoint_cache_dir, k_diffusion_sampler

import gaussport
import gaussport.digits
from gaussport import grids
from gaussport.evaluation import Evaluation, Evaluator, markdown_table, nfe_to_reach
from gaussport.tuning import Recipe, load_recipe

logger = logging.getLogger("gaussport.benchmarks")

# k-diffusion sampler -> (our solver whose NFE-10 grid it runs on, extra keyword arguments)
PEERS = {
    "sample_euler": ("euler", {}),
    "sample_heun": ("heun", {}),
    "sample_dpm_2": ("heun", {}),
    "sample_lms": ("ipndm_v", {}),
    "sample_dpmpp_2m": ("dpmpp_2m", {}),
    "sample_dpmpp_2s_ancestral": ("dpmpp_2s", {"eta": 0.0}),
    "sample_dpmpp_3m_sde": ("dpmpp_3m", {"eta": 0.0}),
}
FULL = {"seeds": 1024, "frechet_seeds": 5, "frechet_samples": 250}
QUICK = {"seeds": 32, "frechet_seeds": 2, "frechet_samples": 100}
TARGET_NFE = 10
TRIM_FRACTION = 0.01  # share of seeds left out of the trimmed RMS (the worst of each run), at least 1


def evaluate_entry(ev: Evaluator, recipe: Recipe, solver: str, nfe: int, frechet: bool = False) -> Evaluation:
    """The recipe's entry measured like the harness's runs (same seeds, endpoints, Frechet seeds)."""
    e = ev.evaluate_recipe(recipe, solver, nfe, frechet=frechet)
    assert e.nfe == nfe, (solver, nfe, e.nfe)
    return e


def evaluate_family(ev: Evaluator, solver: str, nfe: int, level: float, rho: float) -> Evaluation:
    """The Karras grid of ``nfe`` evaluations from ``level`` with ``rho`` (no teleport at 80)."""
    solver_obj = gaussport.solvers.get(solver)
    n = next(
        k for k in range(1, nfe + 2) if solver_obj.evaluations((*[2.0**-j for j in range(k)], 0.0)) == nfe
    )
    grid = grids.karras(n, min(ev.sigma_min, level / 2), level, rho) if n > 1 else (level, 0.0)

    def sampler(denoiser: Any, x: torch.Tensor, g: Any) -> torch.Tensor:
        if level >= ev.sigma_max:
            s = gaussport.sampling.with_warm_start_statistics(solver_obj, ev.gaussian, grid)
            return gaussport.solve(denoiser, x, grid, s, model_dtype=ev.model_dtype, disable=True).x
        return gaussport.sample(
            denoiser,
            x,
            g,
            solver_obj,
            warm_start=ev.gaussian,
            sigma_skip=level,
            model_dtype=ev.model_dtype,
            disable=True,
        ).x

    caller = grid if level >= ev.sigma_max else (ev.sigma_max, *grid)
    return ev.evaluate_sampler(f"{solver} Karras", sampler, caller, nfe_budget=nfe)


def plot(
    path: Path,
    recipe_rows: dict[str, dict[int, float]],
    family_rows: dict[str, dict[int, float]],
    lines: dict[str, float],
    title: str,
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no plot")
        return False
    fig, ax = plt.subplots(figsize=(9.6, 4.6), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (solver, row) in enumerate(sorted(recipe_rows.items())):
        nfes = sorted(row)
        c = colours[i % len(colours)]
        ax.plot(nfes, [row[n] for n in nfes], "o-", color=c, label=f"{solver}, tuned recipe")
        fam = family_rows.get(solver, {})
        if fam:
            ax.plot(
                sorted(fam),
                [fam[n] for n in sorted(fam)],
                "s:",
                color=c,
                alpha=0.6,
                label=f"{solver}, best Karras grid",
            )
    styles = ["--", "-."]
    for (label, value), style in zip(lines.items(), styles, strict=False):
        ax.axhline(value, color="black", linestyle=style, linewidth=1.0, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("NFE (model evaluations per sample)")
    ax.set_ylabel("trajectory error (RMS to the exact endpoint)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _seeds(ranges: Any) -> str:
    """The provenance's seed ranges ``[[first, last], seed, ...]`` as text."""
    parts = [f"{r[0]}..{r[1]}" if isinstance(r, list | tuple) else str(r) for r in ranges or ()]
    return ", ".join(parts) or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 seeds, 2 Frechet seeds of 100 samples")
    parser.add_argument("--recipe", help="a recipe file (default: the shipped digits recipe)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the markdown and JSON")
    parser.add_argument("--plot", default="docs/img/digits-recipe.png", help="the error-vs-NFE PNG")
    parser.add_argument("--no-frechet", action="store_true", help="trajectory error only")
    parser.add_argument(
        "--cache-dir", default=str(endpoint_cache_dir()), help="exact-endpoint cache ('' = none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="reported seeds 0..N-1 (default 128; 32 --quick)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load = os.getloadavg()[0]
    recipe = load_recipe(args.recipe) if args.recipe else gaussport.digits.load_digits_recipe()
    ev = gaussport.digits.evaluator(
        seeds=range(cfg["seeds"]),
        reference_steps=10,
        cache_dir=args.cache_dir or None,
        frechet_seeds=range(500, 500 + cfg["frechet_seeds"]),
        frechet_samples=cfg["frechet_samples"],
    )
    exact = ev.reference()
    logger.info("endpoints ready [%.0f s]", time.perf_counter() - start)

    # The recipe, and the best Karras grid its provenance records, on the reported seeds.
    cells = recipe.provenance.get("cells", {})
    recipe_rows: dict[str, dict[int, float]] = {}
    family_rows: dict[str, dict[int, float]] = {}
    trimmed_rows: dict[str, dict[int, float]] = {}
    records: list[dict[str, Any]] = []
    trim = max(1, round(TRIM_FRACTION * cfg["seeds"]))
    for entry in recipe.entries:
        e = evaluate_entry(ev, recipe, entry.solver, entry.nfe)
        recipe_rows.setdefault(entry.solver, {})[entry.nfe] = e.error
        # The RMS over seeds is dominated by a few seeds with large errors: the same without them.
        per_seed = (e.samples.to(torch.float64) - exact).square().flatten(1).mean(1).sort(descending=True)[0]
        trimmed = float(per_seed[trim:].mean().sqrt())
        trimmed_rows.setdefault(entry.solver, {})[entry.nfe] = trimmed
        rec = {
            "solver": entry.solver,
            "nfe": entry.nfe,
            "sigma_skip": entry.sigma_skip,
            "recipe_error": e.error,
            "recipe_error_trimmed": trimmed,
            "worst_seeds_share": float(per_seed[:trim].sum() / per_seed.sum()),
            "trimmed_seeds": trim,
        }
        fam = cells.get(f"{entry.solver}@{entry.nfe}", {}).get("family")
        if fam:
            f = evaluate_family(ev, entry.solver, entry.nfe, fam["sigma_skip"], fam["rho"])
            family_rows.setdefault(entry.solver, {})[entry.nfe] = f.error
            rec.update(family_sigma_skip=fam["sigma_skip"], family_rho=fam["rho"], family_error=f.error)
        records.append(rec)
        logger.info(
            "%s NFE %d: recipe %.4g, Karras %.4g",
            entry.solver,
            entry.nfe,
            e.error,
            rec.get("family_error", math.nan),
        )

    # (b) our solvers without teleport at NFE 10 (Heun-type: the largest grid within it).
    plain: dict[str, Evaluation] = {}
    for name in gaussport.solvers.available():
        plain[name] = ev.evaluate(name, TARGET_NFE)
    best_plain = min(plain, key=lambda n: plain[n].error)
    # (a) k-diffusion at NFE 10 on the grids our counterparts use.
    peers: dict[str, float] = {}
    for fn_name, (ours, kwargs) in PEERS.items():
        sampler = k_diffusion_sampler(fn_name, **kwargs)
        if sampler is None:
            logger.warning("k-diffusion is not installed; no peers")
            break
        p = ev.evaluate_sampler(fn_name, sampler, plain[ours].grid, nfe_budget=TARGET_NFE)
        peers[fn_name] = p.error
    best_peer = min(peers, key=peers.get) if peers else None
    logger.info("baselines done [%.0f s]", time.perf_counter() - start)

    # Acceptance: the smallest NFE at which the best recipe solver reaches each baseline.
    nfes = sorted({n for row in recipe_rows.values() for n in row})
    best_at = {n: min((row[n], s) for s, row in recipe_rows.items() if n in row) for n in nfes}
    curve = [best_at[n][0] for n in nfes]
    targets = {"plain": plain[best_plain].error}
    if best_peer:
        targets["k-diffusion"] = peers[best_peer]
    reach = {k: nfe_to_reach(nfes, curve, v) for k, v in targets.items()}
    first = {k: next((n for n in nfes if best_at[n][0] <= v), None) for k, v in targets.items()}

    frechet: dict[str, Any] = {}
    if not args.no_frechet:
        solver5 = best_at[5][1] if 5 in best_at else None
        if solver5 is not None:
            r5 = evaluate_entry(ev, recipe, solver5, 5, frechet=True).frechet
            p10 = ev.evaluate(best_plain, TARGET_NFE, frechet=True).frechet
            spread = math.hypot(r5.std, p10.std)
            frechet = {
                "recipe_solver": solver5,
                "recipe_nfe5": list(r5.values),
                "recipe_mean": r5.mean,
                "recipe_std": r5.std,
                "plain_solver": best_plain,
                "plain_nfe10": list(p10.values),
                "plain_mean": p10.mean,
                "plain_std": p10.std,
                "difference": r5.mean - p10.mean,
                "spread": spread,
                "within": abs(r5.mean - p10.mean) <= spread or r5.mean <= p10.mean,
            }
            logger.info(
                "FD: recipe NFE 5 %.3g +- %.2g, plain NFE 10 %.3g +- %.2g", r5.mean, r5.std, p10.mean, p10.std
            )
    seconds = time.perf_counter() - start

    # Report.
    lines = [
        "# Digits: the tuned sampling recipe",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/digits_recipe.py{' --quick' if args.quick else ''}"
        f"{' --recipe ' + args.recipe if args.recipe else ''}`; {platform.machine()}, "
        f"torch {torch.__version__}, "
        f"{args.threads} thread(s), load average {load:.2f} at the start; wall time {seconds:.0f} s.",
        "",
        f"Reported seeds: {cfg['seeds']} (0..{cfg['seeds'] - 1}); the recipe's tuning seeds "
        f"{_seeds(recipe.provenance.get('tuning_seeds'))} and validation seeds "
        f"{_seeds(recipe.provenance.get('validation_seeds'))} "
        "are disjoint. Exact endpoints: RK4 in lambda, 10 steps per unit. Recipe: "
        f"{args.recipe or 'shipped (gaussport/data/digits_recipe.json)'}, tuned by "
        f"`{recipe.provenance.get('command', '?')}`.",
        "",
        "## Acceptance",
        "",
    ]
    acc = []
    if best_peer:
        n4 = first["k-diffusion"]
        acc.append(
            [
                f"best k-diffusion at NFE 10 (`{best_peer}`)",
                targets["k-diffusion"],
                n4 or "-",
                f"{reach['k-diffusion']:.2f}",
                "<= 4",
                "met" if n4 is not None and n4 <= 4 else "NOT met",
            ]
        )
    n5 = first["plain"]
    acc.append(
        [
            f"our best no-teleport at NFE 10 (`{best_plain}`)",
            targets["plain"],
            n5 or "-",
            f"{reach['plain']:.2f}",
            "<= 5",
            "met" if n5 is not None and n5 <= 5 else "NOT met",
        ]
    )
    lines.append(
        markdown_table(
            [
                "target",
                "error",
                "first recipe NFE at or below",
                "NFE (log-log interp.)",
                "required",
                "verdict",
            ],
            acc,
        )
    )
    if frechet:
        lines += [
            "",
            f"Frechet distance ({cfg['frechet_seeds']} seeds x {cfg['frechet_samples']} samples, "
            f"mean +- sample std): recipe `{frechet['recipe_solver']}` at NFE 5: "
            f"{frechet['recipe_mean']:.3g} +- {frechet['recipe_std']:.2g}; `{best_plain}` without "
            f"teleport at NFE 10: {frechet['plain_mean']:.3g} +- {frechet['plain_std']:.2g}; difference "
            f"{frechet['difference']:+.3g}, spread (root sum of squares of the stds) "
            f"{frechet['spread']:.2g}: "
            f"{'within the spread (met)' if frechet['within'] else 'outside the spread (NOT met)'}.",
        ]
    lines += [
        "",
        "## Trajectory error per solver and NFE (reported seeds)",
        "",
        "`recipe` = the tuned entry (level and free grid); `Karras` = the best Karras grid (level, rho) "
        "from the tuning seeds; ratio = recipe / Karras.",
        "",
    ]
    rows = []
    for r in records:
        fam = r.get("family_error")
        rows.append(
            [
                f"`{r['solver']}`",
                r["nfe"],
                f"{r['sigma_skip']:.3g}",
                r["recipe_error"],
                "-" if fam is None else f"{fam:.3g} ({r['family_sigma_skip']:g}, rho {r['family_rho']:g})",
                "-" if fam is None else f"{r['recipe_error'] / fam:.2f}",
                f"{r['recipe_error_trimmed']:.3g} ({r['worst_seeds_share']:.2f})",
            ]
        )
    lines.append(
        markdown_table(
            [
                "solver",
                "NFE",
                "level",
                "recipe error",
                "Karras error (level, rho)",
                "ratio",
                f"recipe error without the {trim} worst seeds (their share of the squared error)",
            ],
            rows,
        )
    )
    rises = non_monotone(recipe_rows)
    rises_trimmed = non_monotone(trimmed_rows)
    lines += [
        "",
        "More evaluations, never a worse sample: budgets whose recipe error is above a smaller budget's "
        "(same solver, reported seeds): "
        + (
            "; ".join(f"`{s}` NFE {n} {e:.3g} > NFE {m} {em:.3g}" for s, n, e, m, em in rises)
            if rises
            else "none"
        )
        + f". Without the {trim} worst seeds of each run: "
        + (
            "; ".join(f"`{s}` NFE {n} {e:.3g} > NFE {m} {em:.3g}" for s, n, e, m, em in rises_trimmed)
            if rises_trimmed
            else "none"
        )
        + ".",
    ]
    lines += ["", "## Baselines at NFE 10 (no teleport, Karras rho 7 from 80)", ""]
    base = [[f"`{n}`", plain[n].nfe, plain[n].error] for n in sorted(plain, key=lambda n: plain[n].error)]
    base += [[f"k-diffusion `{k}`", TARGET_NFE, v] for k, v in sorted(peers.items(), key=lambda kv: kv[1])]
    lines.append(markdown_table(["sampler", "NFE used", "error"], base))
    markdown = "\n".join(lines) + "\n"
    (out / "digits_recipe.md").write_text(markdown)
    record = {
        "settings": {
            **cfg,
            "quick": args.quick,
            "recipe": args.recipe or "shipped",
            "load_average": load,
            "threads": args.threads,
            "seconds": seconds,
        },
        "recipe": records,
        "plain_nfe10": {n: {"nfe": e.nfe, "error": e.error} for n, e in plain.items()},
        "k_diffusion_nfe10": peers,
        "targets": targets,
        "first_nfe": first,
        "nfe_to_reach": {k: (None if math.isinf(v) else v) for k, v in reach.items()},
        "frechet": frechet,
        "non_monotone": [
            {"solver": s, "nfe": n, "error": e, "smaller_nfe": m, "smaller_error": em}
            for s, n, e, m, em in rises
        ],
        "non_monotone_trimmed": [
            {"solver": s, "nfe": n, "error": e, "smaller_nfe": m, "smaller_error": em}
            for s, n, e, m, em in rises_trimmed
        ],
    }
    (out / "digits_recipe.json").write_text(json.dumps(record, indent=1) + "\n")
    base_lines = {f"our best no-teleport NFE 10 ({best_plain})": targets["plain"]}
    if best_peer:
        base_lines[f"best k-diffusion NFE 10 ({best_peer})"] = targets["k-diffusion"]
    if args.plot:
        plot(
            Path(args.plot),
            recipe_rows,
            family_rows,
            base_lines,
            f"8x8 digits, seeds 0..{cfg['seeds'] - 1}: tuned recipe vs best Karras grid vs NFE-10 baselines",
        )
    print(markdown)
    return 0


def non_monotone(rows: dict[str, dict[int, float]]) -> list[tuple[str, int, float, int, float]]:
    """Per solver, each budget whose error is above the best smaller budget's: (solver, NFE, error,
    that smaller NFE, its error)."""
    out = []
    for solver, row in rows.items():
        best: tuple[float, int] | None = None
        for n in sorted(row):
            if best is not None and row[n] > best[0]:
                out.append((solver, n, row[n], best[1], best[0]))
            if best is None or row[n] < best[0]:
                best = (row[n], n)
    return out


if __name__ == "__main__":
    sys.exit(main())
