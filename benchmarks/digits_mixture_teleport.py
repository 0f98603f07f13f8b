"""Teleporting through a mixture on the digits model: can one teleport lower than with the Gaussian?

Warm starts compared (all at zero model calls):

* ``gaussian`` -- the shipped data Gaussian, closed-form flow;
* ``class`` -- the ten class-conditional Gaussians (:func:`gaussport.digits.load_digits_class_gaussians`)
  as a :class:`~gaussport.analytic.GaussianMixture`, flow by :class:`~gaussport.analytic.MixtureFlow`;
* ``kmeans-K`` -- :func:`~gaussport.analytic.fit_kmeans_mixture` of the training split (K = 10, 20, 50);
* ``empirical`` -- the training split itself (:class:`~gaussport.analytic.EmpiricalMixture`).

Measured on the shipped network: (i) the teleport error itself -- RMS distance at ``sigma_skip``
between the network's own trajectory (RK4 in lambda from sigma 80, :func:`gaussport.reference_solve`)
and the teleported state, and the warm start's relative velocity error on the held-out digits;
(ii) the trajectory error (to the cached exact endpoints) of dpmpp_2m, unipc_bh2 and dpm_solver_v3
at NFE 3-6 with each warm start at its best level (``teleport="respace"``; the best level is chosen on
the same seeds for every warm start). DPM-Solver-v3 gets the data Gaussian's analytic EMS with every
warm start, so only the teleport differs. Costs: seconds of the mixture flow per batch.

Usage::

    PYTHONPATH=src python benchmarks/digits_mixture_teleport.py --quick   # smoke run (< 1 min)
    PYTHONPATH=src python benchmarks/digits_mixture_teleport.py           # the reported run

Writes ``<out>/digits_mixture_teleport.{md,json}`` and ``<png>`` (default
``docs/img/mixture-teleport-error.png``).
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

import numpy as np
import torch
from _common import endpoint_cache_dir

import gaussport
from gaussport.analytic import EmpiricalMixture, MixtureFlow, fit_class_mixture, fit_kmeans_mixture
from gaussport.digits import (
    load_digits_class_gaussians,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_test_set,
)
from gaussport.digits.files import pixels_to_model
from gaussport.digits.train import load_sklearn_digits, stratified_split
from gaussport.ems import analytic_ems
from gaussport.evaluation import Evaluator, markdown_table, velocity_error
from gaussport.metrics import trajectory_error
from gaussport.solvers import get as get_solver

logger = logging.getLogger("gaussport.benchmarks")

SIGMA_MAX = 80.0
FULL = {
    "seeds": 64,
    "levels": (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
    "kmeans": (10, 20, 50),
    "solvers": ("dpmpp_2m", "unipc_bh2", "dpm_solver_v3"),
    "nfes": (3, 4, 5, 6),
}
QUICK = {"seeds": 8, "levels": (1.0, 2.0, 5.0), "kmeans": (10,), "solvers": ("dpmpp_2m",), "nfes": (4,)}
REFERENCE_STEPS = 10  # RK4 steps per unit of lambda: the same as the cached endpoints (digits_sigma_skip.py)


class CachedFlow:
    """A warm start whose ``flow`` results are remembered per (levels, input) and timed.

    The trajectory-error sweep teleports the same seeds to the same level for every solver and NFE;
    the mixture flow is deterministic, so it is computed once per level and its cost recorded.
    """

    def __init__(self, warm_start: Any) -> None:
        self.warm_start = warm_start
        self.seconds: dict[float, float] = {}
        self.calls: dict[float, int] = {}
        self._memo: dict[tuple, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.warm_start(x, sigma)

    def flow(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        key = (float(sigma_from), float(sigma_to), x.dtype, tuple(x.shape), x.double().sum().item())
        if key not in self._memo:
            t0 = time.perf_counter()
            self._memo[key] = self.warm_start.flow(x, sigma_from, sigma_to)
            self.seconds[float(sigma_to)] = time.perf_counter() - t0
            self.calls[float(sigma_to)] = int(getattr(self.warm_start, "last_evaluations", 0))
        return self._memo[key].clone()


def training_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The model-space training images ``[N, 1, 8, 8]`` and labels of the shipped split (checked)."""
    pixels, labels = load_sklearn_digits()
    test_set = load_digits_test_set()
    meta = test_set.metadata
    train_idx, test_idx = stratified_split(labels, meta["test_fraction"], meta["seed"])
    if not np.array_equal(test_idx, test_set.indices.numpy()):
        raise RuntimeError("the recomputed split differs from the shipped test split")
    x = pixels_to_model(pixels[train_idx]).unsqueeze(1).double()
    return x, torch.from_numpy(labels[train_idx])


def warm_starts(x_train: torch.Tensor, y_train: torch.Tensor, kmeans: tuple[int, ...]) -> dict[str, Any]:
    shipped = load_digits_class_gaussians()
    refit = fit_class_mixture(x_train, y_train)
    gap = max(
        float((a.cov.dense() - b.cov.dense()).abs().max())
        for a, b in zip(shipped.components, refit.components, strict=True)
    )
    logger.info("class mixture: refit vs shipped max |cov difference| = %.2g", gap)
    out: dict[str, Any] = {"gaussian": load_digits_gaussian(), "class": MixtureFlow(shipped)}
    for k in kmeans:
        t0 = time.perf_counter()
        mix = fit_kmeans_mixture(x_train, k, generator=torch.Generator().manual_seed(0), restarts=4)
        logger.info("k-means K=%d fitted in %.1f s", k, time.perf_counter() - t0)
        out[f"kmeans-{k}"] = MixtureFlow(mix)
    out["empirical"] = MixtureFlow(EmpiricalMixture(x_train))
    return {name: CachedFlow(ws) for name, ws in out.items()}


def network_states(net: Any, x_t: torch.Tensor, levels: tuple[float, ...]) -> dict[float, torch.Tensor]:
    """The network's own PF-ODE states at each level (RK4 in lambda, piecewise from sigma 80)."""
    states, x, prev = {}, x_t.double(), SIGMA_MAX
    for s in sorted(levels, reverse=True):
        x = gaussport.reference_solve(
            net, x, (prev, s), steps_per_unit=REFERENCE_STEPS, model_dtype=torch.float32
        )
        states[s], prev = x, s
    return states


def v3_with_gaussian_ems(ev: Evaluator, nfe: int, skip: float) -> Any:
    """DPM-Solver-v3 with the data Gaussian's analytic EMS over the respaced grid (as sample() builds it)."""
    solver = get_solver("dpm_solver_v3")
    grid = ev.budget(solver, nfe, "respace", skip).solver_grid
    positive = [s for s in grid if s > 0]
    ems = analytic_ems(ev.gaussian_for_ems, sigma_min=positive[-1], sigma_max=positive[0])
    return get_solver("dpm_solver_v3", ems=ems)


def level_for(per_level: dict[float, float], target: float) -> float:
    """The lowest level whose error is ``target``, log-log interpolated (errors fall as sigma rises)."""
    pts = sorted(per_level.items())
    if pts[0][1] <= target:
        return pts[0][0]
    for (s0, e0), (s1, e1) in zip(pts, pts[1:], strict=False):
        if e1 <= target < e0:
            f = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(s0) + f * (math.log(s1) - math.log(s0)))
    return math.inf


def teleport_table(
    errors: dict[str, dict[float, float]], levels: tuple[float, ...], corner: str = "warm start \\ sigma_skip"
) -> str:
    rows = []
    for name, per_level in errors.items():
        best = min(per_level.values())
        rows.append(
            [
                name,
                *[
                    f"**{per_level[s]:.3g}**" if per_level[s] == best else f"{per_level[s]:.3g}"
                    for s in levels
                ],
            ]
        )
    return markdown_table([corner, *[f"{s:g}" for s in levels]], rows)


def plot(errors: dict[str, dict[float, float]], velocity: dict[str, dict[float, float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping %s", path)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), dpi=110)
    for name, per_level in errors.items():
        levels = sorted(per_level)
        axes[0].loglog(levels, [per_level[s] for s in levels], marker="o", ms=3, label=name)
    for name, per_level in velocity.items():
        levels = sorted(per_level)
        axes[1].loglog(levels, [per_level[s] for s in levels], marker="o", ms=3, label=name)
    axes[0].set(xlabel="sigma_skip", ylabel="RMS |teleported - network state|", title="teleport error")
    axes[1].set(xlabel="sigma", ylabel="mean |D - D_warm| / |x - D|", title="relative velocity error")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 seeds, 3 levels, K = 10, dpmpp_2m at NFE 4")
    parser.add_argument("--out", default="benchmarks/results", help="folder for .md/.json")
    parser.add_argument("--png", default="docs/img/mixture-teleport-error.png", help="the figure")
    parser.add_argument(
        "--cache-dir", default=str(endpoint_cache_dir()), help="exact-endpoint cache ('' = none)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(1)
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = args.seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_start = os.getloadavg()

    net = load_digits_denoiser()
    x_train, y_train = training_split()
    starts = warm_starts(x_train, y_train, cfg["kmeans"])
    seeds = range(cfg["seeds"])
    levels = cfg["levels"]

    # (i) the teleport error against the network's own trajectory, and the velocity error.
    ev0 = gaussport.digits.evaluator(
        seeds=seeds, reference_steps=REFERENCE_STEPS, cache_dir=args.cache_dir or None
    )
    x_t = ev0.noise()
    t0 = time.perf_counter()
    with torch.no_grad():
        exact = network_states(net, x_t, levels)
    network_seconds = time.perf_counter() - t0
    teleport_err: dict[str, dict[float, float]] = {}
    flow_seconds: dict[str, dict[float, float]] = {}
    flow_calls: dict[str, dict[float, int]] = {}
    for name, ws in starts.items():
        teleport_err[name] = {}
        for s in levels:
            moved = ws.flow(x_t.double(), SIGMA_MAX, s)
            teleport_err[name][s] = trajectory_error(moved, exact[s]).rms
        flow_seconds[name], flow_calls[name] = dict(ws.seconds), dict(ws.calls)
        logger.info("%s: teleport error %s", name, {s: round(v, 4) for s, v in teleport_err[name].items()})
    held_out = load_digits_test_set().images
    velocity = {
        name: velocity_error(net, ws, held_out, levels, repeats=2, seed=3_000_000)
        for name, ws in starts.items()
    }

    # (ii) trajectory error at NFE 3-6, best level per warm start.
    gaussian = load_digits_gaussian()
    sweep: dict[str, dict[str, dict[int, dict[float, float]]]] = {}
    for name, ws in starts.items():
        ev = Evaluator(
            net,
            ws,
            shape=(1, 8, 8),
            seeds=seeds,
            reference_steps=REFERENCE_STEPS,
            cache_dir=args.cache_dir or None,
        )
        ev.gaussian_for_ems = gaussian  # type: ignore[attr-defined]
        ev.reference()
        sweep[name] = {}
        for solver in cfg["solvers"]:
            sweep[name][solver] = {}
            for nfe in cfg["nfes"]:
                row = {}
                for s in levels:
                    obj = (
                        v3_with_gaussian_ems(ev, nfe, s) if solver == "dpm_solver_v3" else get_solver(solver)
                    )
                    row[s] = ev.evaluate(obj, nfe, teleport="respace", sigma_skip=s).error
                sweep[name][solver][nfe] = row
        logger.info("%s: sweep done [%.0f s]", name, time.perf_counter() - start)
    plain = {}
    for solver in cfg["solvers"]:
        plain[solver] = {nfe: ev0.evaluate(solver, nfe).error for nfe in cfg["nfes"]}

    # ------------------------------------------------------------------ report
    load_end = os.getloadavg()
    names = list(starts)
    lines = [
        "# Digits: teleporting through a mixture",
        "",
        "Command: `PYTHONPATH=src python benchmarks/digits_mixture_teleport.py"
        f"{' --quick' if args.quick else ''}`; "
        f"{platform.machine()}, torch {torch.__version__}, 1 thread; seeds 0..{cfg['seeds'] - 1}; "
        f"wall time {time.perf_counter() - start:.0f} s; load average {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end (1-min).",
        "",
        "## Teleport error",
        "",
        "RMS distance at `sigma_skip` between the teleported state and the network's own PF-ODE state "
        f"(RK4 in lambda from sigma 80, {REFERENCE_STEPS} steps per unit; "
        f"{network_seconds:.1f} s for all levels). "
        "Bold: the smallest in the row.",
        "",
        teleport_table(teleport_err, levels),
        "",
        "Relative velocity error `mean |D - D_warm| / |x - D|` on the held-out digits (2 noise draws):",
        "",
        teleport_table(velocity, levels, "warm start \\ sigma"),
        "",
        "The level at which each warm start's teleport error equals the Gaussian's at a given level "
        "(log-log interpolation on the falling branch; lower is better; inf: never as low):",
        "",
        markdown_table(
            ["warm start", *[f"= Gaussian at {s:g}" for s in levels[1:]]],
            [
                [n, *[f"{level_for(teleport_err[n], teleport_err['gaussian'][s]):.3g}" for s in levels[1:]]]
                for n in names
            ],
        ),
        "",
        "Cost of the teleport (80 -> sigma_skip) for the batch of "
        f"{cfg['seeds']} states: seconds (mixture-denoiser calls), dopri5 at rtol 1e-7, atol 1e-9:",
        "",
        markdown_table(
            ["warm start \\ sigma_skip", *[f"{s:g}" for s in levels]],
            [
                [n, *[f"{flow_seconds[n].get(s, 0.0):.3f} ({flow_calls[n].get(s, 0)})" for s in levels]]
                for n in names
            ],
        ),
        "",
        "## Trajectory error at the best level",
        "",
        "Trajectory error (RMS to the exact endpoints) with each warm start at its best `sigma_skip` "
        f"(chosen from {', '.join(f'{s:g}' for s in levels)} on the same seeds; in brackets), "
        '`teleport="respace"`; `none` = no teleport.',
        "",
    ]
    for solver in cfg["solvers"]:
        rows = [["none", *[f"{plain[solver][n]:.4g}" for n in cfg["nfes"]]]]
        for name in names:
            cells = []
            for nfe in cfg["nfes"]:
                row = sweep[name][solver][nfe]
                best = min(row, key=row.get)
                cells.append(f"{row[best]:.4g} ({best:g})")
            rows.append([name, *cells])
        lines += [
            f"### `{solver}`",
            "",
            markdown_table(["warm start \\ NFE", *map(str, cfg["nfes"])], rows),
            "",
        ]
    text = "\n".join(lines)
    (out / "digits_mixture_teleport.md").write_text(text + "\n")
    record = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "load_average": [load_start[0], load_end[0]],
        "seconds": time.perf_counter() - start,
        "teleport_error": {n: {f"{s:g}": v for s, v in d.items()} for n, d in teleport_err.items()},
        "velocity_error": {n: {f"{s:g}": v for s, v in d.items()} for n, d in velocity.items()},
        "flow_seconds": {n: {f"{s:g}": v for s, v in d.items()} for n, d in flow_seconds.items()},
        "flow_calls": {n: {f"{s:g}": v for s, v in d.items()} for n, d in flow_calls.items()},
        "trajectory_error": {
            n: {
                so: {str(k): {f"{s:g}": e for s, e in r.items()} for k, r in d.items()} for so, d in v.items()
            }
            for n, v in sweep.items()
        },
        "no_teleport": {so: {str(k): e for k, e in d.items()} for so, d in plain.items()},
    }
    (out / "digits_mixture_teleport.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(teleport_err, velocity, Path(args.png))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
