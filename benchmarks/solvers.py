"""Solver benchmark: error to the exact ODE endpoint against NFE, with and without the Gaussian warm start.

Targets are analytic Gaussian mixtures (exact denoisers), so the exact endpoint of every trajectory
is known from a high-accuracy reference solve (RK4 in lambda, :func:`gaussport.reference_solve`,
checked against a run with twice the steps). Every gaussport solver runs plain and after a teleport
(:func:`gaussport.sample` with the mixture's moment-matched Gaussian, ``teleport="respace"``: same
NFE), and the peers run in the same process on identical grids: k-diffusion's samplers and
diffusers' UniPC / DPM-Solver++ schedulers (through an exact epsilon model built with
:class:`gaussport.schedules.NativeModel`; their sigmas and timesteps are set to the benchmark grid
so that only the update formulas differ).

Usage::

    PYTHONPATH=src python benchmarks/solvers.py            # full run (see docs/benchmarks-solvers.md)
    PYTHONPATH=src python benchmarks/solvers.py --quick    # demo target, fewer methods (~1 min)
    PYTHONPATH=src python benchmarks/solvers.py --out docs/img

Writes a markdown report (tables, NFE-savings summary) to stdout and ``<out>/benchmark-solvers-report.md``,
and one PNG per target to ``<out>/``. Errors are RMS per coordinate against the exact endpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _common import k_diffusion_sampler

import gaussport
import gaussport.testing
from gaussport import grids, schedules
from gaussport.analytic import GaussianMixture, anisotropic_mixture

logger = logging.getLogger("gaussport.benchmarks")

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
NFES = (4, 5, 6, 8, 10, 15, 20, 30)
FAMILIES = {"karras": grids.KarrasFamily(7.0), "logsnr": grids.ExponentialFamily()}
REFERENCE_STEPS = 40  # RK4 steps per unit of lambda for the exact endpoint (checked against twice as many)
TELEPORT_CANDIDATES = (5.0, 10.0, 20.0, 40.0)  # teleport levels tried on calibration seeds


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    mixture: GaussianMixture
    batch: int


def targets(quick: bool) -> list[Target]:
    # The demo's target (gaussport.demo.demo_target): 32 dimensions, 6 components.
    demo = anisotropic_mixture(dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0)
    out = [Target("demo", "d = 32, 6 dense components, eigenvalues 1e-3..0.1", demo, 64)]
    if not quick:
        hard = anisotropic_mixture(
            dim=1024, n_components=10, rank=16, spread=2.0, eigenvalue_range=(1e-4, 0.3), seed=1
        )
        out.append(
            Target(
                "hard",
                "d = 1024, 10 components (rank 16 + isotropic 1e-4), eigenvalues 1e-4..0.3",
                hard,
                16,
            )
        )
    return out


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One sampler: ``run(target, x, sigmas) -> x_end``; ``evals_per_step`` for the NFE budget."""

    label: str
    source: str  # "gaussport", "k-diffusion" or "diffusers"
    run: Callable[[GaussianMixture, torch.Tensor, tuple[float, ...]], torch.Tensor]
    evals_per_step: int = 1
    solver: str | None = None  # gaussport name (teleport-capable)
    options: dict | None = None


def _ours(name: str, label: str | None = None, **options: object) -> Method:
    solver = gaussport.solvers.get(name, **options)
    per_step = 2 if solver.evaluations((2.0, 1.0)) == 2 else 1

    def run(target: GaussianMixture, x: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
        return gaussport.solve(target, x, sigmas, solver, disable=True).x

    return Method(label or name, "gaussport", run, per_step, name, dict(options))


def _k_diffusion(fn_name: str, label: str, per_step: int = 1, **kwargs: object) -> Method | None:
    run = k_diffusion_sampler(fn_name, **kwargs)
    return None if run is None else Method(label, "k-diffusion", run, per_step)


def _table_schedule() -> schedules.VPDiscrete:
    """A VP table geometric in sigma over the benchmark range (diffusers needs a discrete schedule)."""
    levels = torch.logspace(
        math.log10(SIGMA_MIN * 0.999), math.log10(SIGMA_MAX * 1.001), 1000, dtype=torch.float64
    )
    return schedules.VPDiscrete(1.0 / (1.0 + levels**2))


def _diffusers(cls_name: str, label: str, **config: object) -> Method | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import diffusers
    except ImportError:
        return None
    cls = getattr(diffusers, cls_name)
    table = _table_schedule()

    def run(target: GaussianMixture, x: torch.Tensor, sigmas: tuple[float, ...]) -> torch.Tensor:
        positive = [s for s in sigmas if s > 0]
        scheduler = cls(
            num_train_timesteps=1000,
            prediction_type="epsilon",
            final_sigmas_type="zero" if sigmas[-1] == 0 else "sigma_min",
            **config,
        )
        scheduler.set_timesteps(len(positive))
        # The benchmark grid, exactly: sigmas as given, timesteps as the table's (fractional) times.
        scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
        scheduler.timesteps = table.t_of_sigma(torch.tensor(positive, dtype=torch.float64))
        model = schedules.NativeModel(target, table, "epsilon")
        sample = x / math.sqrt(1 + sigmas[0] ** 2)
        for t in scheduler.timesteps:
            sample = scheduler.step(model(sample, t), t, sample).prev_sample
        return sample * math.sqrt(1 + sigmas[-1] ** 2)

    return Method(label, "diffusers", run, 1)


def methods(quick: bool) -> list[Method]:
    ours = [
        _ours("euler"),
        _ours("heun"),
        _ours("ddim"),
        _ours("dpmpp_2m"),
        _ours("dpmpp_2m_taylor"),
        _ours("dpmpp_2s"),
        _ours("dpmpp_3m"),
        _ours("dpmpp_3m_fixed"),
        _ours("dpmpp_3m", "dpmpp_3m (lof)", lower_order_final=True),
        _ours("dpmpp_3m_fixed", "dpmpp_3m_fixed (lof)", lower_order_final=True),
        _ours("unipc_bh1"),
        _ours("unipc_bh1", "unipc_bh1 (lof)", lower_order_final=True),
        _ours("unipc_bh2"),
        _ours("unipc_bh2", "unipc_bh2 (order 3)", solver_order=3),
        _ours("unipc_bh2", "unipc_bh2 (order 3, lof)", solver_order=3, lower_order_final=True),
        _ours("unipc_vary_coeff"),
        _ours("ipndm"),
        _ours("ipndm_v"),
    ]
    peers = [
        _k_diffusion("sample_euler", "k-diffusion euler"),
        _k_diffusion("sample_heun", "k-diffusion heun", 2),
        _k_diffusion("sample_dpm_2", "k-diffusion dpm_2", 2),
        _k_diffusion("sample_lms", "k-diffusion lms"),
        _k_diffusion("sample_dpmpp_2m", "k-diffusion dpmpp_2m"),
        _k_diffusion("sample_dpmpp_2s_ancestral", "k-diffusion dpmpp_2s (eta 0)", 2, eta=0.0),
        _k_diffusion("sample_dpmpp_3m_sde", "k-diffusion dpmpp_3m_sde (eta 0)", eta=0.0),
        _diffusers("UniPCMultistepScheduler", "diffusers unipc bh2-2", solver_type="bh2", solver_order=2),
        _diffusers("UniPCMultistepScheduler", "diffusers unipc bh2-3", solver_type="bh2", solver_order=3),
        _diffusers(
            "DPMSolverMultistepScheduler", "diffusers dpmpp 2M", algorithm_type="dpmsolver++", solver_order=2
        ),
        _diffusers(
            "DPMSolverMultistepScheduler", "diffusers dpmpp 3M", algorithm_type="dpmsolver++", solver_order=3
        ),
    ]
    if quick:
        keep = {
            "heun",
            "dpmpp_2m",
            "dpmpp_3m",
            "dpmpp_3m_fixed",
            "unipc_bh1",
            "unipc_bh2",
            "ipndm",
            "k-diffusion dpmpp_2m",
            "k-diffusion dpmpp_3m_sde (eta 0)",
            "diffusers unipc bh2-2",
        }
        ours = [m for m in ours if m.label in keep]
        peers = [m for m in peers if m is not None and m.label in keep]
    return ours + [m for m in peers if m is not None]


# ---------------------------------------------------------------------------- runs


@dataclass
class Row:
    target: str
    family: str
    label: str
    source: str
    teleport: str  # "" (none), "respace", "respace+seed"
    nfe: list[int]
    error: list[float]


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def steps_for(nfe: int, per_step: int) -> int:
    """Intervals of a grid ending in 0 that fit ``nfe`` evaluations (2-evaluation methods: 2n - 1)."""
    return nfe if per_step == 1 else (nfe + 1) // 2


def run_target(
    target: Target, all_methods: list[Method], nfes: tuple[int, ...], skips: dict[str, dict[int, float]]
) -> tuple[list[Row], dict]:
    """Every method on every grid family and NFE; teleported runs use ``skips[family][nfe]``."""
    x = target.mixture.sample(target.batch, SIGMA_MAX, torch.Generator().manual_seed(0), dtype=torch.float64)
    gaussian = target.mixture.moments()
    t0 = time.perf_counter()
    endpoint = grids.karras(2, SIGMA_MIN, SIGMA_MAX)
    exact = gaussport.reference_solve(target.mixture, x, endpoint, steps_per_unit=REFERENCE_STEPS)
    check = gaussport.reference_solve(target.mixture, x, endpoint, steps_per_unit=2 * REFERENCE_STEPS)
    meta = {"reference_error": _rms(exact, check), "reference_seconds": time.perf_counter() - t0}
    rows: list[Row] = []
    for family_name, family in FAMILIES.items():
        for method in all_methods:
            variants = [("", None)]
            if method.solver is not None:
                variants.append(("respace", {}))
                if "seed_history" in {
                    f.name for f in dataclasses.fields(gaussport.solvers.solver_class(method.solver)[0])
                }:
                    solver = gaussport.solvers.get(method.solver, **(method.options or {}))
                    if gaussport.testing.values_combined(solver) > 1:
                        variants.append(("respace+seed", {"seed_history": True}))
            for teleport, extra in variants:
                row = Row(target.name, family_name, method.label, method.source, teleport, [], [])
                for nfe in nfes:
                    sigmas = family(steps_for(nfe, method.evals_per_step), SIGMA_MIN, SIGMA_MAX)
                    if teleport:
                        sol = gaussport.sample(
                            target.mixture,
                            x,
                            sigmas,
                            method.solver,
                            warm_start=gaussian,
                            sigma_skip=skips[family_name][nfe],
                            teleport="respace",
                            disable=True,
                            **(method.options or {}),
                            **extra,
                        )
                        out, used = sol.x, sol.nfe
                    else:
                        out = method.run(target.mixture, x, sigmas)
                        used = method.evals_per_step * (len(sigmas) - 1) - (method.evals_per_step - 1)
                    row.nfe.append(used)
                    row.error.append(_rms(out, exact) if bool(torch.isfinite(out).all()) else math.inf)
                rows.append(row)
                logger.info(
                    "%s %s %-34s %-13s %s",
                    target.name,
                    family_name,
                    method.label,
                    teleport or "-",
                    " ".join(f"{e:.2e}" for e in row.error),
                )
    return rows, meta


def safe_teleport_level(target: Target, tau: float = 3e-3) -> tuple[float, dict[float, float]]:
    """The automatic teleport level (docs/warm-start.md#the-safe-level-without-sampling).

    The lowest level of a sqrt(2)-spaced ladder from which on the Gaussian's relative velocity error
    ``|D - D_G| / |x - D|`` (mean over probes drawn from the noisy target) stays below ``tau`` --
    computed from the model and its Gaussian, not from solves."""
    gaussian = target.mixture.moments()
    errors = {}
    for k in range(11):
        level = 2.5 * 2 ** (k / 2)
        x = target.mixture.sample(256, level, torch.Generator().manual_seed(7), dtype=torch.float64)
        sigma = torch.full((256,), level, dtype=torch.float64)
        d = target.mixture(x, sigma)
        ratio = (d - gaussian(x, sigma)).flatten(1).norm(dim=1) / (x - d).flatten(1).norm(dim=1)
        errors[level] = float(ratio.mean())
    safe = SIGMA_MAX
    for level in sorted(errors, reverse=True):
        if errors[level] > tau:
            break
        safe = level
    return safe, errors


def calibrate_teleport(
    target: Target,
    family: grids.GridFamily,
    nfes: tuple[int, ...],
    candidates: tuple[float, ...],
    solver: str = "unipc_bh2",
) -> tuple[dict[int, float], dict[float, list[float]]]:
    """Per NFE, the candidate teleport level with the lowest error on separate calibration trajectories.

    A deployment would do the same with a high-NFE reference sampler on a few seeds
    (docs/warm-start.md#calibrating-per-solver-and-budget); here the reference is the RK4 solve of the
    calibration seeds, which never enter the reported errors. Returns the chosen level per NFE and the
    calibration errors per candidate.
    """
    batch = max(4, target.batch // 4)
    x = target.mixture.sample(batch, SIGMA_MAX, torch.Generator().manual_seed(1), dtype=torch.float64)
    gaussian = target.mixture.moments()
    exact = gaussport.reference_solve(
        target.mixture, x, grids.karras(2, SIGMA_MIN, SIGMA_MAX), steps_per_unit=REFERENCE_STEPS
    )
    errors: dict[float, list[float]] = {}
    for skip in candidates:
        errors[skip] = []
        for nfe in nfes:
            sigmas = family(nfe, SIGMA_MIN, SIGMA_MAX)
            out = gaussport.sample(
                target.mixture,
                x,
                sigmas,
                solver,
                warm_start=gaussian,
                sigma_skip=skip,
                teleport="respace",
                disable=True,
            ).x
            errors[skip].append(_rms(out, exact))
    chosen = {nfe: min(candidates, key=lambda c: errors[c][k]) for k, nfe in enumerate(nfes)}
    return chosen, errors


# ---------------------------------------------------------------------------- reporting


def _interp_nfe(nfe: list[int], err: list[float], level: float) -> float:
    """Smallest NFE (log-log interpolation between measured points) with error <= level; inf if none."""
    pts = [(n, e) for n, e in zip(nfe, err, strict=True) if math.isfinite(e)]
    for k, (n, e) in enumerate(pts):
        if e <= level:
            if k == 0:
                return float(n)
            n0, e0 = pts[k - 1]
            if e0 <= level or e0 == e:
                return float(n)
            f = (math.log(e0) - math.log(level)) / (math.log(e0) - math.log(e))
            return math.exp(math.log(n0) + f * (math.log(n) - math.log(n0)))
    return math.inf


def _fmt(e: float) -> str:
    return "nan" if not math.isfinite(e) else f"{e:.2e}"


def table(rows: list[Row], target: str, family: str, nfes: tuple[int, ...]) -> str:
    sel = [r for r in rows if r.target == target and r.family == family]
    head = "| method | teleport | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|" + "---|" * (len(nfes) + 2)]
    best = [min(r.error[k] for r in sel) for k in range(len(nfes))]
    for r in sel:
        cells = []
        for k, e in enumerate(r.error):
            cell = _fmt(e)
            if r.nfe[k] != nfes[k]:
                cell += f" ({r.nfe[k]})"
            cells.append(f"**{cell}**" if e == best[k] else cell)
        lines.append(f"| {r.label} | {r.teleport or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def savings(rows: list[Row], target: str, family: str, nfes: tuple[int, ...]) -> tuple[str, list[float]]:
    """Per NFE: the best peer's error, and the NFE our best teleported solver needs to reach it."""
    peers = [r for r in rows if r.target == target and r.family == family and r.source != "gaussport"]
    ours = [
        r
        for r in rows
        if r.target == target and r.family == family and r.source == "gaussport" and r.teleport
    ]
    lines = [
        "| NFE | best peer (no teleport) | its error | gaussport + teleport: NFE to match "
        "| best at this NFE | NFE saved |",
        "|---|---|---|---|---|---|",
    ]
    saved = []
    for k, n in enumerate(nfes):
        cands = [(r.error[k], r.label) for r in peers if r.nfe[k] <= n]
        if not cands:
            continue
        err, label = min(cands)
        needed = min(
            (_interp_nfe(r.nfe, r.error, err), r.label + (" +seed" if "seed" in r.teleport else ""))
            for r in ours
        )
        here = min(
            (r.error[k], r.label + (" +seed" if "seed" in r.teleport else "")) for r in ours if r.nfe[k] <= n
        )
        frac = 1 - needed[0] / n if math.isfinite(needed[0]) else -math.inf
        saved.append(frac)
        # At the smallest NFE measured a match cannot be interpolated further down: a bound.
        bound = needed[0] == nfes[0] and any(r.error[0] < err for r in ours)
        shown = f"<= {needed[0]:.0f}" if bound else f"{needed[0]:.1f}"
        lines.append(
            f"| {n} | {label} | {_fmt(err)} | {shown} ({needed[1]}) | {here[1]}: {_fmt(here[0])} | "
            f"{'>= ' if bound else ''}{100 * frac:.0f}% |"
        )
    return "\n".join(lines), saved


def plot(rows: list[Row], target: Target, path: str) -> bool:
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping %s", path)
        return False

    def score(r: Row) -> float:  # mean log error over the NFEs: the overall ranking
        return sum(math.log(e) if math.isfinite(e) and e > 0 else 50.0 for e in r.error)

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110, sharey=True)
    for ax, family in zip(axes, FAMILIES, strict=True):
        sel = [r for r in rows if r.target == target.name and r.family == family]
        best_peer = sorted((r for r in sel if r.source != "gaussport"), key=score)[:3]
        best_ours = sorted((r for r in sel if r.source == "gaussport" and not r.teleport), key=score)[:2]
        best_tp = sorted((r for r in sel if r.source == "gaussport" and r.teleport), key=score)[:3]
        for r in best_peer:
            ax.loglog(r.nfe, r.error, "o--", alpha=0.8, label=f"{r.label}")
        for r in best_ours:
            ax.loglog(r.nfe, r.error, "s-", alpha=0.8, label=f"gaussport {r.label}")
        for r in best_tp:
            ax.loglog(
                r.nfe,
                r.error,
                "^-",
                lw=2,
                label=f"gaussport {r.label} + teleport{' +seed' if 'seed' in r.teleport else ''}",
            )
        ax.set_xticks(sel[0].nfe if sel else [])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"{target.name}: {family} grid, sigma {SIGMA_MAX:g} -> 0")
        ax.set_xlabel("denoiser evaluations (NFE)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("RMS error to the exact endpoint")
    fig.suptitle(f"{target.description}; teleport level calibrated per NFE", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="demo target, fewer methods (about a minute)")
    parser.add_argument("--out", default="docs/img", help="folder for the PNG plots and the markdown report")
    # One thread: on a shared 2-core machine two OpenMP threads made each evaluation 10-100x slower.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    nfes = (5, 10, 20) if args.quick else NFES
    start = time.perf_counter()
    all_methods = methods(args.quick)
    report = [
        f"Command: `PYTHONPATH=src python benchmarks/solvers.py{' --quick' if args.quick else ''}` "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads).",
        "",
    ]
    for target in targets(args.quick):
        t_target = time.perf_counter()
        safe, ladder = safe_teleport_level(target)
        candidates = tuple(sorted(set(TELEPORT_CANDIDATES) | {safe}))
        calibration = {
            name: calibrate_teleport(target, fam, nfes, candidates) for name, fam in FAMILIES.items()
        }
        skips = {name: chosen for name, (chosen, _) in calibration.items()}
        rows, meta = run_target(target, all_methods, nfes, skips)
        meta["seconds"] = time.perf_counter() - t_target
        report += [
            f"## Target `{target.name}`: {target.description}",
            "",
            f"Batch {target.batch}; reference RK4 ({REFERENCE_STEPS} steps per unit of lambda) differs from "
            f"twice as many by {meta['reference_error']:.1e} RMS. Run time {meta['seconds']:.0f} s "
            f"(reference solves {meta['reference_seconds']:.0f} s).",
            "",
            "Teleport level. Relative velocity error of the moment-matched Gaussian, "
            "mean |D - D_G| / |x - D| over 256 probes of the noisy target:",
            "",
            "| sigma | " + " | ".join(f"{lv:.3g}" for lv in ladder) + " |",
            "|" + "---|" * (len(ladder) + 1),
            "| error | " + " | ".join(f"{e:.1e}" for e in ladder.values()) + " |",
            "",
            "Automatic safe level (docs/warm-start.md#the-safe-level-without-sampling, tau = 3e-3): "
            f"sigma* = {safe:.3g}. The level used at each "
            "NFE is the candidate with the lowest error of unipc_bh2 on separate calibration seeds (errors "
            "below; the reported errors use other seeds); every gaussport solver then teleports there with "
            "the grid re-spaced below it (same NFE).",
            "",
        ]
        for family in FAMILIES:
            chosen, errors = calibration[family]
            report += [
                f"### {family} grid",
                "",
                "| calibration: sigma_skip | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                "|" + "---|" * (len(nfes) + 1),
            ]
            for skip, errs in errors.items():
                cells = [
                    f"**{_fmt(e)}**" if chosen[n] == skip else _fmt(e)
                    for n, e in zip(nfes, errs, strict=True)
                ]
                report.append(
                    f"| {skip:.3g}{' (safe)' if skip == safe else ''} | " + " | ".join(cells) + " |"
                )
            report += [
                "",
                table(rows, target.name, family, nfes),
                "",
                "NFE savings: the best peer (k-diffusion / diffusers, no teleport) at each NFE, and the NFE "
                "at which the best gaussport solver with teleport reaches the same error (log-log "
                "interpolated):",
                "",
                savings(rows, target.name, family, nfes)[0],
                "",
            ]
        png = os.path.join(args.out, f"benchmark-solvers-{target.name}.png")
        if plot(rows, target, png):
            report += [f"![{target.name}]({os.path.basename(png)})", ""]
    report.append(f"Total wall time: {time.perf_counter() - start:.0f} s.")
    text = "\n".join(report)
    with open(os.path.join(args.out, "benchmark-solvers-report.md"), "w") as fh:
        fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
