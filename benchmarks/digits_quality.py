"""Quality vs NFE on the trained 8x8-digits model: every registered solver, with and without teleport.

Everything is measured with :func:`gaussport.digits.evaluator`, the harness
(:class:`gaussport.evaluation.Evaluator`) on the shipped model (one generator per seed, exact
endpoints by RK4 in lambda, the NFE -> grid rule of ``Evaluator.budget``, Karras rho = 7 grids from
sigma 80 to 0.002 and a final step to 0):

* **trajectory error** (primary): RMS distance of each sample to the exact ODE endpoint of the same
  noise, on the *reported* seeds;
* **Frechet distance** (FD) to the held-out digits in the shipped classifier's feature space, mean
  +- sample std over several Frechet seeds, for every configuration at the acceptance budgets
  (NFE 6, 8, 10) and for the best few solvers at every NFE.

Every registered solver runs three ways at every NFE:

* ``none``: no teleport (DPM-Solver-v3 gets the analytic EMS of the same Gaussian, see the
  evaluation module, so that the comparison isolates the teleport);
* ``calibrated``: teleport (``teleport="respace"``: the exact Gaussian flow from 80 to sigma_skip,
  the same NFE re-spaced below it) to the level chosen by ``Evaluator.calibrate`` -- the candidate
  with the lowest trajectory error on *calibration seeds disjoint from the reported seeds*, per
  solver and NFE (docs/choosing.md#choosing-sigma_skip, step 2). The reported numbers never see
  the calibration seeds, so the choice is not fitted to them;
* ``fixed``: teleport to one level for all solvers and NFEs (default 2.0).

Peers: k-diffusion 0.1.1's deterministic samplers on the very grids gaussport's counterparts use
(``Evaluator.evaluate_sampler``), with the RMS difference of the samples to ours.

Usage::

    PYTHONPATH=src python benchmarks/digits_quality.py --quick     # ~1-2 min smoke run
    PYTHONPATH=src python benchmarks/digits_quality.py             # full run (docs/benchmarks.md)
    PYTHONPATH=src python benchmarks/digits_quality.py --out benchmarks/results

Writes ``<out>/digits_quality.md`` (all tables and the acceptance verdict), ``<out>/digits_quality.json``
(every number) and the plots ``<out>/digits-quality-all.png``, ``<out>/digits-quality-best.png`` and
``<out>/digits-samples.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import endpoint_cache_dir, k_diffusion_sampler

import gaussport
import gaussport.digits
from gaussport.evaluation import (
    Evaluation,
    Evaluator,
    Series,
    markdown_table,
    nfe_to_reach,
    plot_quality,
    save_sample_panels,
)

logger = logging.getLogger("gaussport.benchmarks")

MODES = ("none", "calibrated", "fixed")
ACCEPTANCE_NFES = (6, 8, 10)
FULL = {
    "nfes": (4, 5, 6, 7, 8, 10, 12, 15, 20),
    "solvers": None,  # every registered solver
    "seeds": 128,
    "calibration_seeds": 32,
    "candidates": (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0),
    "frechet_seeds": 3,
    "frechet_samples": 250,
    "best_few": 3,
}
QUICK = {
    "nfes": (6, 8, 10),
    "solvers": ("euler", "heun", "dpmpp_2m", "unipc_bh2"),
    "seeds": 24,
    "calibration_seeds": 12,
    "candidates": (1.0, 2.0, 5.0),
    "frechet_seeds": 2,
    "frechet_samples": 100,
    "best_few": 0,
}
# k-diffusion sampler -> (our solver on the same grid, extra keyword arguments)
PEERS = {
    "sample_euler": ("euler", {}),
    "sample_heun": ("heun", {}),
    "sample_dpm_2": ("heun", {}),  # same budget (2 evaluations per step); no gaussport counterpart
    "sample_lms": ("ipndm_v", {}),
    "sample_dpmpp_2m": ("dpmpp_2m", {}),
    "sample_dpmpp_2s_ancestral": ("dpmpp_2s", {"eta": 0.0}),
    "sample_dpmpp_3m_sde": ("dpmpp_3m", {"eta": 0.0}),
}
SAME_FORMULA = {"sample_euler", "sample_heun", "sample_lms", "sample_dpmpp_2m", "sample_dpmpp_2s_ancestral"}
SAME_FORMULA |= {"sample_dpmpp_3m_sde"}


def _geomean(values: list[float]) -> float:
    good = [v for v in values if math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in good)) if good else math.inf


def _fd(e: Evaluation | None) -> str:
    if e is None or e.frechet is None:
        return "-"
    f = e.frechet
    return f"{f.mean:.3g} ± {f.std:.2g}" if math.isfinite(f.std) else f"{f.mean:.3g}"


class Run:
    """All evaluations of one benchmark run, indexed by (solver, mode, nfe)."""

    def __init__(self, ev: Evaluator, cfg: dict[str, Any], fixed_level: float, disable: bool) -> None:
        self.ev, self.cfg, self.fixed_level, self.disable = ev, cfg, fixed_level, disable
        n = cfg["seeds"]
        # Calibration seeds: disjoint from the reported ones (the reported ones are 0 .. n-1).
        self.calibration_seeds = tuple(range(100_000, 100_000 + cfg["calibration_seeds"]))
        self.results: dict[tuple[str, str, int], Evaluation] = {}
        self.calibrations: dict[tuple[str, int], dict[float, float]] = {}
        self.peers: list[dict[str, Any]] = []
        self.reported_seeds = tuple(range(n))

    def measure(self, solver: str, nfe: int, frechet: bool) -> None:
        ev = self.ev
        self.results[(solver, "none", nfe)] = ev.evaluate(solver, nfe, frechet=frechet)
        cal = ev.calibrate(solver, nfe, self.cfg["candidates"], seeds=self.calibration_seeds)
        self.calibrations[(solver, nfe)] = cal.errors
        self.results[(solver, "calibrated", nfe)] = ev.evaluate(
            solver, nfe, teleport="respace", sigma_skip=cal.best, frechet=frechet
        )
        self.results[(solver, "fixed", nfe)] = ev.evaluate(
            solver, nfe, teleport="respace", sigma_skip=self.fixed_level, frechet=frechet
        )

    def add_frechet(self, solver: str, mode: str, nfe: int) -> None:
        """Recompute a configuration with the Frechet distance (same seeds, same level)."""
        old = self.results[(solver, mode, nfe)]
        if old.frechet is not None:
            return
        teleport = "none" if mode == "none" else "respace"
        self.results[(solver, mode, nfe)] = self.ev.evaluate(
            solver, nfe, teleport=teleport, sigma_skip=old.sigma_skip, frechet=True
        )

    def errors(self, solver: str, mode: str) -> list[float]:
        return [self.results[(solver, mode, n)].error for n in self.cfg["nfes"]]

    def ranking(self, mode: str = "calibrated") -> list[str]:
        """Solvers by the geometric mean of their error over the NFEs (best first)."""
        return sorted(self.cfg["solvers"], key=lambda s: _geomean(self.errors(s, mode)))


# ---------------------------------------------------------------------------- acceptance
def acceptance(run: Run) -> dict[str, Any]:
    """The issue's acceptance, evaluated on the measured numbers (no tuning)."""
    nfes = run.cfg["nfes"]
    out: dict[str, Any] = {"per_nfe": [], "reach": {}}
    for nfe in ACCEPTANCE_NFES:
        if nfe not in nfes:
            continue
        best = min(run.cfg["solvers"], key=lambda s: run.results[(s, "calibrated", nfe)].error)
        best_plain = min(run.cfg["solvers"], key=lambda s: run.results[(s, "none", nfe)].error)
        tele, plain = run.results[(best, "calibrated", nfe)], run.results[(best, "none", nfe)]
        row: dict[str, Any] = {
            "nfe": nfe,
            "solver": best,
            "sigma_skip": tele.sigma_skip,
            "error_teleport": tele.error,
            "error_plain": plain.error,
            "frechet_teleport": None if tele.frechet is None else [tele.frechet.mean, tele.frechet.std],
            "frechet_plain": None if plain.frechet is None else [plain.frechet.mean, plain.frechet.std],
            "best_plain_solver": best_plain,
            "best_plain_error": run.results[(best_plain, "none", nfe)].error,
        }
        row["error_lower"] = tele.error < plain.error
        if tele.frechet is not None and plain.frechet is not None:
            row["frechet_lower"] = tele.frechet.mean < plain.frechet.mean
            spread = math.hypot(
                0.0 if math.isnan(tele.frechet.std) else tele.frechet.std,
                0.0 if math.isnan(plain.frechet.std) else plain.frechet.std,
            )
            row["frechet_gap_over_spread"] = (
                (plain.frechet.mean - tele.frechet.mean) / spread if spread else None
            )
        out["per_nfe"].append(row)
    if 10 in nfes:
        # (a) the same solver: the best teleported solver at NFE 10, against its own plain NFE 10
        solver = min(run.cfg["solvers"], key=lambda s: run.results[(s, "calibrated", 10)].error)
        level = run.results[(solver, "none", 10)].error
        same = nfe_to_reach(nfes, run.errors(solver, "calibrated"), level)
        # (b) the envelopes: best teleported solver per NFE against the best plain solver at NFE 10
        envelope = [min(run.results[(s, "calibrated", n)].error for s in run.cfg["solvers"]) for n in nfes]
        best_plain_10 = min(run.results[(s, "none", 10)].error for s in run.cfg["solvers"])
        env = nfe_to_reach(nfes, envelope, best_plain_10)
        out["reach"] = {
            "solver": solver,
            "plain_error_at_10": level,
            "nfe_with_teleport": same,
            "passes": same <= 7,
            "best_plain_error_at_10": best_plain_10,
            "nfe_with_teleport_any_solver": env,
            "passes_any_solver": env <= 7,
        }
        # FD version where the FD was measured: the plain FD at 10 against the teleported FD at <= 7
        fd_plain = run.results[(solver, "none", 10)].frechet
        fd_tele = {
            n: run.results[(solver, "calibrated", n)].frechet
            for n in nfes
            if n <= 7 and run.results[(solver, "calibrated", n)].frechet is not None
        }
        if fd_plain is not None and fd_tele:
            out["reach"]["frechet_plain_at_10"] = [fd_plain.mean, fd_plain.std]
            out["reach"]["frechet_teleport_le_7"] = {n: [f.mean, f.std] for n, f in fd_tele.items()}
    return out


# ---------------------------------------------------------------------------- report
def error_table(run: Run, mode: str) -> str:
    nfes = run.cfg["nfes"]
    rows = []
    for s in run.ranking(mode):
        cells: list[Any] = [f"`{s}`"]
        for n in nfes:
            e = run.results[(s, mode, n)]
            txt = f"{e.error:.3g}"
            if mode == "calibrated":
                txt += f" ({e.sigma_skip:g})"
            if e.nfe != n:
                txt += f" [{e.nfe}]"
            cells.append(txt)
        rows.append(cells)
    return markdown_table(["solver", *[f"NFE {n}" for n in nfes]], rows)


def frechet_table(run: Run) -> str:
    nfes = [n for n in ACCEPTANCE_NFES if n in run.cfg["nfes"]]
    rows = []
    for s in run.ranking("calibrated"):
        cells: list[Any] = [f"`{s}`"]
        for n in nfes:
            cells += [_fd(run.results[(s, m, n)]) for m in MODES]
        rows.append(cells)
    header = ["solver"] + [f"{n}: {m}" for n in nfes for m in MODES]
    return markdown_table(header, rows)


def report(run: Run, acc: dict[str, Any], meta: dict[str, Any]) -> str:
    cfg = run.cfg
    lines = [
        "# Digits: quality vs NFE, with and without teleport",
        "",
        f"Command: `{meta['command']}`; {meta['environment']}; wall time {meta['seconds']:.0f} s "
        f"(exact endpoints {meta['reference_seconds']:.0f} s).",
        "",
        f"Reported seeds: {cfg['seeds']} (0..{cfg['seeds'] - 1}); "
        f"calibration seeds: {cfg['calibration_seeds']} "
        f"(100000..), disjoint. Exact endpoints: RK4 in lambda, {meta['reference_steps']} steps per unit; "
        f"against twice the steps: {meta['reference_accuracy']:.1e} RMS. Frechet distance: "
        f"{cfg['frechet_seeds']} seeds x {cfg['frechet_samples']} samples against the held-out digits "
        "(mean ± sample std over seeds). Teleport: `teleport='respace'`; calibrated level = best of "
        f"{list(cfg['candidates'])} on the calibration seeds, per solver and NFE; fixed level "
        f"{run.fixed_level:g}.",
        "",
        f"High-NFE floor: `{meta['floor']['solver']}` at NFE {meta['floor']['nfe']} without teleport: "
        f"trajectory error {meta['floor']['error']:.2e}, FD {meta['floor']['frechet']}.",
        "",
        "## Acceptance (issue 4)",
        "",
    ]
    rows = []
    for r in acc["per_nfe"]:
        ft, fp = r["frechet_teleport"], r["frechet_plain"]
        rows.append(
            [
                r["nfe"],
                f"`{r['solver']}`",
                f"{r['sigma_skip']:g}",
                f"{r['error_teleport']:.3g}",
                f"{r['error_plain']:.3g}",
                "-" if ft is None else f"{ft[0]:.3g} ± {ft[1]:.2g}",
                "-" if fp is None else f"{fp[0]:.3g} ± {fp[1]:.2g}",
                "yes" if r["error_lower"] and r.get("frechet_lower", False) else "no",
                f"`{r['best_plain_solver']}` {r['best_plain_error']:.3g}",
            ]
        )
    lines.append(
        markdown_table(
            [
                "NFE",
                "best solver (with teleport)",
                "sigma_skip",
                "error, teleport",
                "error, same solver plain",
                "FD, teleport",
                "FD, plain",
                "both lower",
                "best plain solver",
            ],
            rows,
        )
    )
    reach = acc.get("reach", {})
    if reach:
        lines += [
            "",
            f"NFE with teleport to reach the no-teleport error at NFE 10 (`nfe_to_reach`, log-log "
            f"interpolated): same solver `{reach['solver']}` (plain {reach['plain_error_at_10']:.3g}): "
            f"**{reach['nfe_with_teleport']:.2f}** -> {'≤ 7: met' if reach['passes'] else '> 7: not met'}; "
            f"best teleported solver per NFE against the best plain solver at NFE 10 "
            f"({reach['best_plain_error_at_10']:.3g}): **{reach['nfe_with_teleport_any_solver']:.2f}** -> "
            f"{'≤ 7: met' if reach['passes_any_solver'] else '> 7: not met'}.",
        ]
        if "frechet_plain_at_10" in reach:
            fp = reach["frechet_plain_at_10"]
            tel = ", ".join(
                f"NFE {n}: {v[0]:.3g} ± {v[1]:.2g}" for n, v in reach["frechet_teleport_le_7"].items()
            )
            lines += [
                "",
                f"FD of `{reach['solver']}`: plain at NFE 10 {fp[0]:.3g} ± {fp[1]:.2g}; teleported {tel}.",
            ]
    lines += [
        "",
        "## Trajectory error, no teleport",
        "",
        "Rows ranked by the geometric mean over NFE; `[n]` = NFE actually used where the budget does "
        "not fit (two-evaluation solvers at even NFE).",
        "",
        error_table(run, "none"),
        "",
        "## Trajectory error, teleport to the calibrated level (level in parentheses)",
        "",
        error_table(run, "calibrated"),
        "",
        f"## Trajectory error, teleport to the fixed level {run.fixed_level:g}",
        "",
        error_table(run, "fixed"),
        "",
        "## Frechet distance (mean ± std over seeds)",
        "",
        frechet_table(run),
        "",
    ]
    extra = [
        (s, m, n)
        for (s, m, n), e in sorted(run.results.items())
        if e.frechet is not None and n not in ACCEPTANCE_NFES
    ]
    if extra:
        best = sorted({s for s, _, _ in extra})
        lines += [f"FD at the other NFEs for the best few solvers ({', '.join(best)}):", ""]
        rows = []
        for s in best:
            for m in ("none", "calibrated"):
                rows.append([f"`{s}` {m}", *[_fd(run.results.get((s, m, n))) for n in cfg["nfes"]]])
        lines += [markdown_table(["solver", *[f"NFE {n}" for n in cfg["nfes"]]], rows), ""]
    if run.peers:
        lines += [
            "## k-diffusion peers (same grids, no teleport)",
            "",
            "`RMS diff` = RMS difference of the final samples, ours vs the peer, same seeds.",
            "",
            markdown_table(
                ["peer", "ours", "NFE", "peer error", "our error", "RMS diff"],
                [
                    [
                        f"`{p['peer']}`",
                        f"`{p['ours']}`",
                        p["nfe"],
                        f"{p['peer_error']:.3g}",
                        f"{p['our_error']:.3g}",
                        f"{p['difference']:.1e}",
                    ]
                    for p in run.peers
                ],
            ),
            "",
        ]
    lines += ["## Calibration errors (calibration seeds)", ""]
    rows = []
    for (s, n), errs in sorted(run.calibrations.items()):
        best = min(sorted(errs, reverse=True), key=lambda c: errs[c])
        rows.append(
            [
                f"`{s}`",
                n,
                *[f"**{errs[c]:.3g}**" if c == best else f"{errs[c]:.3g}" for c in cfg["candidates"]],
            ]
        )
    lines += [markdown_table(["solver", "NFE", *[f"{c:g}" for c in cfg["candidates"]]], rows), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def plot_all(run: Run, path: Path) -> bool:
    """Two panels, no teleport and calibrated teleport, one colour per solver."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator, ScalarFormatter
    except ImportError:
        logger.warning("matplotlib is not installed; skipping %s", path)
        return False
    nfes = run.cfg["nfes"]
    order = run.ranking("calibrated")
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110, sharey=True)
    for ax, mode, title in zip(
        axes, ("none", "calibrated"), ("no teleport", "teleport to the calibrated level"), strict=True
    ):
        for k, s in enumerate(order):
            actual = [run.results[(s, mode, n)].nfe for n in nfes]
            ax.loglog(actual, run.errors(s, mode), "o-", ms=3, color=cmap(k % 20), label=s)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("denoiser evaluations (NFE)")
        ax.set_xticks(list(nfes))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("trajectory error (RMS to the exact endpoint)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("8x8 digits model, Karras grids 80 -> 0.002 -> 0", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_best(run: Run, solvers: list[str], path: Path) -> bool:
    nfes = run.cfg["nfes"]
    series = []
    for s in solvers:
        for mode, style, name in (("none", "x--", "no teleport"), ("calibrated", "o-", "teleport")):
            es = [run.results[(s, mode, n)] for n in nfes]
            series.append(
                Series(
                    f"{s}, {name}", [e.nfe for e in es], [e.error for e in es], [e.frechet for e in es], style
                )
            )
    return plot_quality(series, path, title="best solvers on the digits model: with and without teleport")


def sample_panels(ev: Evaluator, nfe: int, best: str, best_plain: str, level: float, path: Path) -> bool:
    """The first 32 seeds: exact endpoints; the best plain solver; the best teleported solver with and
    without its teleport (all at ``nfe``)."""
    seeds = ev.seeds[:32]
    panels = [("exact ODE endpoint", ev.reference(seeds))]
    for solver, teleport in ((best_plain, "none"), (best, "none"), (best, "respace")):
        if teleport == "none" and panels[-1][0].startswith(f"{solver}, "):
            continue
        e = ev.evaluate(
            solver, nfe, teleport=teleport, sigma_skip=level if teleport != "none" else None, seeds=seeds
        )
        where = "no teleport" if teleport == "none" else f"teleport to {level:g}"
        panels.append((f"{solver}, NFE {e.nfe}, {where}: error {e.error:.3g}", e.samples))
    return save_sample_panels(panels, path)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 solvers, NFE 6/8/10, few seeds (~1-2 min)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the tables, JSON and plots")
    parser.add_argument("--solvers", nargs="*", help="registered solvers (default: all)")
    parser.add_argument("--nfe", nargs="*", type=int, help="NFE budgets")
    parser.add_argument(
        "--fixed-skip", type=float, default=2.0, help="the fixed teleport level (default 2.0)"
    )
    parser.add_argument("--reference-steps", type=int, default=10, help="RK4 steps per unit of lambda")
    parser.add_argument("--no-peers", action="store_true", help="skip the k-diffusion peers")
    parser.add_argument(
        "--cache-dir", default=str(endpoint_cache_dir()), help="exact-endpoint cache ('' = none)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    cfg["solvers"] = tuple(args.solvers or cfg["solvers"] or gaussport.solvers.available())
    if args.nfe:
        cfg["nfes"] = tuple(sorted(args.nfe))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ev = gaussport.digits.evaluator(
        seeds=range(cfg["seeds"]),
        reference_steps=args.reference_steps,
        frechet_seeds=range(1_000_000, 1_000_000 + cfg["frechet_seeds"]),
        frechet_samples=cfg["frechet_samples"],
        cache_dir=args.cache_dir or None,
        device=args.device,
    )
    run = Run(ev, cfg, args.fixed_skip, disable=not args.progress)
    ev.reference()
    ev.reference(run.calibration_seeds)
    accuracy = ev.reference_accuracy(range(min(8, cfg["seeds"])))
    logger.info(
        "exact endpoints ready (%.0f s); RK4 vs twice the steps: %.1e", ev.reference_seconds, accuracy
    )

    from tqdm.auto import tqdm

    jobs = [(s, n) for s in cfg["solvers"] for n in cfg["nfes"]]
    for s, n in tqdm(jobs, desc="solvers x NFE", disable=not args.progress):
        run.measure(s, n, frechet=n in ACCEPTANCE_NFES)
        e0, e1 = run.results[(s, "none", n)], run.results[(s, "calibrated", n)]
        logger.info(
            "%-16s NFE %2d: plain %.3g, teleport(%g) %.3g, fixed %.3g  [%.0f s]",
            s,
            n,
            e0.error,
            e1.sigma_skip,
            e1.error,
            run.results[(s, "fixed", n)].error,
            time.perf_counter() - start,
        )
    best_few = run.ranking("calibrated")[: cfg["best_few"]]
    for s in best_few:
        for n in cfg["nfes"]:
            for m in ("none", "calibrated"):
                run.add_frechet(s, m, n)
        logger.info("FD at every NFE for %s [%.0f s]", s, time.perf_counter() - start)

    if not args.no_peers:
        for fn_name, (ours, kwargs) in PEERS.items():
            if ours not in cfg["solvers"]:
                continue
            sampler = k_diffusion_sampler(fn_name, **kwargs)
            if sampler is None:
                logger.warning("k-diffusion is not installed; no peers")
                break
            for n in cfg["nfes"]:
                mine = run.results[(ours, "none", n)]
                peer = ev.evaluate_sampler(f"k-diffusion {fn_name}", sampler, mine.grid, nfe_budget=n)
                diff = (peer.samples.double() - mine.samples.double()).pow(2).mean().sqrt().item()
                run.peers.append(
                    {
                        "peer": fn_name,
                        "ours": ours,
                        "nfe": n,
                        "peer_nfe": peer.nfe,
                        "our_nfe": mine.nfe,
                        "peer_error": peer.error,
                        "our_error": mine.error,
                        "difference": diff,
                        "same_formula": fn_name in SAME_FORMULA,
                    }
                )
        logger.info("peers done [%.0f s]", time.perf_counter() - start)

    # High-NFE floor: how far the best plain solver is from converged, and the FD of near-exact samples.
    floor_solver = "dpmpp_2m" if "dpmpp_2m" in cfg["solvers"] else cfg["solvers"][0]
    floor_nfe = 20 if args.quick else 60
    floor = ev.evaluate(floor_solver, floor_nfe, frechet=True)
    acc = acceptance(run)
    meta = {
        "command": "PYTHONPATH=src python benchmarks/digits_quality.py" + (" --quick" if args.quick else ""),
        "environment": f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), "
        f"device {args.device}",
        "seconds": time.perf_counter() - start,
        "reference_seconds": ev.reference_seconds,
        "reference_steps": args.reference_steps,
        "reference_accuracy": accuracy,
        "floor": {
            "solver": floor_solver,
            "nfe": floor_nfe,
            "error": floor.error,
            "frechet": str(floor.frechet),
        },
    }
    text = report(run, acc, meta)
    (out / "digits_quality.md").write_text(text + "\n")
    record = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "fixed_skip": args.fixed_skip,
        "calibration_seeds": list(run.calibration_seeds),
        "meta": meta,
        "acceptance": acc,
        "ranking": run.ranking("calibrated"),
        "results": [e.summary() | {"mode": m} for (_, m, _), e in sorted(run.results.items())],
        "calibrations": [
            {"solver": s, "nfe": n, "errors": {f"{c:g}": v for c, v in errs.items()}}
            for (s, n), errs in sorted(run.calibrations.items())
        ],
        "peers": run.peers,
    }
    (out / "digits_quality.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    plot_all(run, out / "digits-quality-all.png")
    focus = run.ranking("calibrated")[: max(3, cfg["best_few"])]
    plot_best(run, focus, out / "digits-quality-best.png")
    n6 = 6 if 6 in cfg["nfes"] else cfg["nfes"][0]
    best = min(cfg["solvers"], key=lambda s: run.results[(s, "calibrated", n6)].error)
    best_plain = min(cfg["solvers"], key=lambda s: run.results[(s, "none", n6)].error)
    level = run.results[(best, "calibrated", n6)].sigma_skip
    sample_panels(ev, n6, best, best_plain, level, out / "digits-samples.png")
    print(text)
    logger.info("wrote %s (%.0f s)", out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
