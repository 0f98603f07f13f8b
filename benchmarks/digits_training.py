"""Plain vs Gaussian-residual digits network at the same training budget (gaussport issue 15).

Both runs train the same :class:`~gaussport.digits.DigitsUNet` from the same initial weights, batches
and noise (``gaussport.digits.train.train_denoiser`` with the same seed, steps, batch size and
learning rate); they differ only in the parameterisation:

* ``plain``: EDM's preconditioning, ``D = c_skip x + c_out F`` (the shipped recipe, EDM weighting);
* ``residual``: ``D = D_G + c_out F`` with ``D_G`` the analytic denoiser of
  :func:`~gaussport.digits.load_digits_gaussian` (the training split's Gaussian) and ``F`` the
  U-Net's raw output (:func:`gaussport.digits.train.residual_digits_denoiser`, weighting
  ``1 / c_out^2``).

Measured (one thread per run, load average recorded):

1. training curves: every ``--eval-every`` steps the EMA model's held-out EDM loss (test split,
   unconditional, 4 fixed draws of noise level and noise per image; the same metric for both) and the
   digits Frechet distance of ``--curve-samples`` Heun samples (12 steps, NFE 23, fixed noise),
   against the training wall time (evaluation time excluded);
2. the time and steps each needs to reach the plain model's final held-out loss and Frechet distance;
3. sampling quality of each final EMA model at NFE 4-10, with and without teleport: trajectory error
   against each model's own exact endpoints (:class:`gaussport.evaluation.Evaluator`, seeds 0..63)
   and the Frechet distance (2 Frechet seeds); the teleport level is calibrated per model, solver and
   NFE on seeds 10000.. (disjoint from the reported ones).

Usage (stages, so the two trainings run in parallel and resume from checkpoints)::

    python benchmarks/digits_training.py train --model plain --seed 0 --steps 1500
    python benchmarks/digits_training.py train --model residual --seed 0 --steps 1500
    python benchmarks/digits_training.py report --seeds 0 --steps 1500
    python benchmarks/digits_training.py all --quick        # a smoke run of everything (~2 min)

Writes into ``--work`` (default ``benchmarks/out/digits_training``) checkpoints, EMA weights and
records; ``report`` writes ``benchmarks/results/digits_training.{json,md}`` and the plots
``docs/img/digits-training-curves.png`` and ``docs/img/digits-training-nfe.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import endpoint_cache_dir

import gaussport
import gaussport.digits
from gaussport import grids
from gaussport._files import atomic_writer
from gaussport.digits import files
from gaussport.digits import train as train_module
from gaussport.digits.train import (
    DenoiserConfig,
    held_out_loss,
    load_sklearn_digits,
    residual_digits_denoiser,
    stratified_split,
    train_denoiser,
    trainer_config,
)
from gaussport.digits.unet import DigitsUNet
from gaussport.evaluation import Evaluator, markdown_table

logger = logging.getLogger("gaussport.benchmarks")
ROOT = Path(__file__).resolve().parent.parent
MODELS = ("plain", "residual")
SOLVERS = ("heun", "dpmpp_2m")
NFES = (4, 5, 6, 7, 8, 10)
CANDIDATES = (0.5, 1.0, 2.0, 5.0, 10.0)
QUICK = {
    "steps": 40,
    "eval_every": 20,
    "curve_samples": 64,
    "seeds": 8,
    "calibration_seeds": 4,
    "frechet_samples": 64,
    "nfes": (4, 6),
    "solvers": ("heun",),
    "candidates": (1.0, 5.0),
}
FULL = {
    "steps": 1500,
    "eval_every": 250,
    "curve_samples": 500,
    "seeds": 64,
    "calibration_seeds": 16,
    "frechet_samples": 250,
    "nfes": NFES,
    "solvers": SOLVERS,
    "candidates": CANDIDATES,
}


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images and labels, test images: the shipped model's split (seed 0, 20%)."""
    pixels, labels = load_sklearn_digits()
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    x = files.pixels_to_model(pixels).unsqueeze(1)
    return x[train_idx], torch.from_numpy(labels)[train_idx], x[test_idx]


def _heun_samples(model: torch.nn.Module, n: int, seed: int = 0, steps: int = 12) -> torch.Tensor:
    z = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gaussport.solve(model, 80.0 * z, grids.karras(steps, 0.002, 80.0), "heun", disable=True).x


def _run_dir(work: Path, model: str, seed: int, steps: int) -> Path:
    return work / f"{model}-seed{seed}-steps{steps}"


def train(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train one model with evaluations and checkpoints (resumes from the checkpoint if there is one)."""
    torch.set_num_threads(1)
    x_train, y_train, x_test = _data()
    gaussian = gaussport.digits.load_digits_gaussian()
    frechet = gaussport.digits.DigitsFrechet()
    n_curve = cfg["curve_samples"]

    def evaluate(ema: torch.nn.Module, step: int) -> dict[str, float]:
        return {
            "held_out_loss": held_out_loss(ema, x_test, None, repeats=4),
            "frechet": frechet(_heun_samples(ema, n_curve)),
            "load": _load() or math.nan,
        }

    out = _run_dir(args.work, args.model, args.seed, cfg["steps"])
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.safetensors"
    ema, record = train_denoiser(
        x_train,
        y_train,
        seed=args.seed,
        config=DenoiserConfig(steps=cfg["steps"]),
        gaussian=gaussian if args.model == "residual" else None,
        evaluate=evaluate,
        eval_every=cfg["eval_every"],
        checkpoint_dir=out,
        checkpoint_every=cfg["eval_every"],
        resume=checkpoint if checkpoint.exists() else None,
        disable=args.quiet or None,
    )
    # The DigitsUNet holding the trained weights (for the residual form: its raw network F).
    unet = ema if args.model == "plain" else ema.network.unet
    files.save_network(
        unet,
        out / files.DENOISER_FILE,
        files.DENOISER_FORMAT,
        extra={"parameterisation": args.model, "steps": cfg["steps"], "seed": args.seed},
    )
    record["model"] = args.model
    record["seed"] = args.seed
    with atomic_writer(out / "record.json", "w") as f:
        f.write(json.dumps(record, indent=1))
    logger.info(
        "%s seed %d: final loss %.4f in %.0f s",
        args.model,
        args.seed,
        record["final_loss"],
        record["train_seconds"],
    )
    return record


def load_model(work: Path, model: str, seed: int, steps: int) -> torch.nn.Module:
    """The trained EMA model of a run, as an unconditional denoiser (eval mode, no gradients)."""
    unet = files.load_digits_denoiser(directory=_run_dir(work, model, seed, steps))
    if model == "plain":
        return unet
    return (
        residual_digits_denoiser(unet, gaussport.digits.load_digits_gaussian()).eval().requires_grad_(False)
    )


def sampling_quality(model: torch.nn.Module, cfg: dict[str, Any], disable: bool) -> list[dict[str, Any]]:
    """Trajectory error and Frechet distance at each NFE, without and with a calibrated teleport."""
    ev = Evaluator(
        model,
        gaussport.digits.load_digits_gaussian(),
        shape=(1, 8, 8),
        seeds=range(cfg["seeds"]),
        frechet_metric=gaussport.digits.DigitsFrechet(),
        frechet_seeds=(0, 1),
        frechet_samples=cfg["frechet_samples"],
        cache_dir=endpoint_cache_dir(),
        disable=disable,
    )
    calibration = tuple(range(10_000, 10_000 + cfg["calibration_seeds"]))
    rows = []
    for solver in cfg["solvers"]:
        for nfe in cfg["nfes"]:
            plain = ev.evaluate(solver, nfe, frechet=True)
            cal = ev.calibrate(solver, nfe, cfg["candidates"], seeds=calibration)
            tele = ev.evaluate(solver, nfe, teleport="respace", sigma_skip=cal.best, frechet=True)
            for mode, e in (("none", plain), ("teleport", tele)):
                rows.append(
                    {
                        "solver": solver,
                        "nfe": nfe,
                        "mode": mode,
                        "sigma_skip": e.sigma_skip,
                        "error": e.error,
                        "frechet_mean": e.frechet.mean,
                        "frechet_std": e.frechet.std,
                    }
                )
    return rows


def step_times(rounds: int = 3, steps: int = 15) -> dict[str, float]:
    """Median seconds per training step of each form, measured interleaved in this process (the two
    training runs ran at different load averages, so their own step times do not compare)."""
    from gaussport.training import Trainer

    x_train, y_train, _ = _data()
    gaussian = gaussport.digits.load_digits_gaussian()
    one_hot = torch.nn.functional.one_hot(y_train, 10).float()
    cfg = DenoiserConfig(steps=rounds * steps + 2)  # 2 warm-up steps first
    trainers = {}
    for m in MODELS:
        unet = DigitsUNet(generator=torch.Generator().manual_seed(0))
        model = unet if m == "plain" else residual_digits_denoiser(unet, gaussian)
        weighting = "edm" if m == "plain" else "denoiser"
        loss = functools.partial(train_module._digits_loss, cfg=cfg, weighting=weighting)
        trainers[m] = Trainer(model, loss, (x_train, one_hot), config=trainer_config(cfg, 0), disable=True)
        trainers[m].train(steps=2)  # warm-up
    times: dict[str, list[float]] = {m: [] for m in MODELS}
    for _ in range(rounds):
        for m in MODELS:
            t0 = time.perf_counter()
            trainers[m].train(steps=steps)
            times[m].append((time.perf_counter() - t0) / steps)
    return {m: statistics.median(v) for m, v in times.items()}


LEVELS = (0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0)


@torch.no_grad()
def per_level_error(model: torch.nn.Module, x_test: torch.Tensor, repeats: int = 4) -> list[float]:
    """Mean squared denoising error ``|D(x0 + sigma eps, sigma) - x0|^2`` per pixel on the test split,
    unweighted, at each of :data:`LEVELS` (fixed noise draws, the same for every model)."""
    gen = torch.Generator().manual_seed(4321)
    out = []
    for sigma in LEVELS:
        total = 0.0
        for _ in range(repeats):
            eps = torch.randn(x_test.shape, generator=gen)
            s = torch.full((x_test.shape[0],), sigma)
            total += float(((model(x_test + sigma * eps, s) - x_test) ** 2).mean())
        out.append(total / repeats)
    return out


def _reach(evals: list[dict[str, Any]], key: str, level: float) -> dict[str, float] | None:
    """The first evaluation at or below ``level``: its step and training seconds."""
    for e in evals:
        if e[key] <= level:
            return {"step": e["step"], "train_seconds": e["train_seconds"]}
    return None


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def report(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    steps = cfg["steps"]
    records = {
        (m, s): json.loads((_run_dir(args.work, m, s, steps) / "record.json").read_text())
        for m in MODELS
        for s in args.seeds
    }
    quality = {}
    for m in MODELS:
        for s in args.seeds:
            logger.info("sampling quality: %s seed %d", m, s)
            quality[(m, s)] = sampling_quality(load_model(args.work, m, s, steps), cfg, args.quiet)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "steps": steps,
        "seeds": list(args.seeds),
        "config": {k: v for k, v in cfg.items()},
        "load_average_report": _load(),
        "torch_threads": 1,
        "runs": {f"{m}-seed{s}": records[(m, s)] for m in MODELS for s in args.seeds},
        "quality": {f"{m}-seed{s}": quality[(m, s)] for m in MODELS for s in args.seeds},
        "reach": {},
    }
    lines = [
        f"Training budget: {steps} steps, batch 128, peak lr 2e-3 (the shipped recipe's schedule "
        f"over {steps} steps), seeds {', '.join(map(str, args.seeds))}; one torch thread per run.",
        "",
    ]
    # Curves table
    header = [
        "step",
        *[f"{m}: held-out loss" for m in MODELS],
        *[f"{m}: FD" for m in MODELS],
        *[f"{m}: train s" for m in MODELS],
    ]
    steps_seen = sorted({e["step"] for r in records.values() for e in r["evaluations"]})
    rows = []
    for st in steps_seen:
        row: list[Any] = [st]
        for key in ("held_out_loss", "frechet", "train_seconds"):
            for m in MODELS:
                vals = [e[key] for s in args.seeds for e in records[(m, s)]["evaluations"] if e["step"] == st]
                row.append(_mean_std(vals) if vals else "-")
        rows.append(row)
    lines += [
        "Training curves (EMA model; held-out EDM loss on the test split, digits FD of "
        f"{cfg['curve_samples']} Heun samples at NFE 23; mean ± std over seeds):",
        "",
        markdown_table(header, rows),
        "",
    ]
    # Step times measured side by side (the runs' own step times saw different loads)
    seconds = step_times()
    result["step_seconds_interleaved"] = seconds
    result["load_average_step_times"] = _load()
    lines += [
        f"Step time measured interleaved in one process (one thread, load average {_load():.2f}): plain "
        f"{seconds['plain'] * 1000:.0f} ms, residual {seconds['residual'] * 1000:.0f} ms per step "
        f"(ratio {seconds['residual'] / seconds['plain']:.3f}); the times to reach below use these.",
        "",
    ]
    # Time to reach the plain model's final quality
    reach_rows = []
    for s in args.seeds:
        final = records[("plain", s)]["evaluations"][-1]
        for key in ("held_out_loss", "frechet"):
            entry = {m: _reach(records[(m, s)]["evaluations"], key, final[key]) for m in MODELS}
            result["reach"][f"seed{s}-{key}"] = {"level": final[key], **entry}
            reach_rows.append(
                [
                    s,
                    key,
                    f"{final[key]:.4g}",
                    *[
                        "not reached"
                        if entry[m] is None
                        else f"step {entry[m]['step']} ({entry[m]['step'] * seconds[m]:.0f} s)"
                        for m in MODELS
                    ],
                ]
            )
    lines += [
        "Steps to reach the plain model's final quality (resolution: one evaluation interval), and the "
        "seconds at the interleaved step times above:",
        "",
        markdown_table(["seed", "metric", "plain final", *MODELS], reach_rows),
        "",
    ]
    # Timing and load
    timing = []
    for m in MODELS:
        for s in args.seeds:
            r = records[(m, s)]
            load = r["load_average_1min"] or {}
            timing.append(
                [
                    m,
                    s,
                    f"{r['seconds_per_step'] * 1000:.0f}",
                    f"{r['final_loss']:.4f}",
                    f"{load.get('mean', math.nan):.2f} ({load.get('min', math.nan):.2f}-"
                    f"{load.get('max', math.nan):.2f})",
                ]
            )
    lines += [
        "Step time and final training loss (mean of the last 10% of steps; the losses are weighted "
        "differently, so compare the held-out loss instead):",
        "",
        markdown_table(["model", "seed", "ms/step", "final training loss", "load average (min-max)"], timing),
        "",
    ]
    # Sampling quality
    qrows = []
    for solver in cfg["solvers"]:
        for nfe in cfg["nfes"]:
            for mode in ("none", "teleport"):
                row = [solver, nfe, mode]
                for m in MODELS:
                    hits = [
                        q
                        for s in args.seeds
                        for q in quality[(m, s)]
                        if q["solver"] == solver and q["nfe"] == nfe and q["mode"] == mode
                    ]
                    err = _mean_std([h["error"] for h in hits])
                    fd = _mean_std([h["frechet_mean"] for h in hits])
                    skip = ",".join(f"{h['sigma_skip']:g}" for h in hits) if mode == "teleport" else "-"
                    row += [err, fd, skip]
                qrows.append(row)
    qheader = [
        "solver",
        "NFE",
        "teleport",
        *[f"{m}: {c}" for m in MODELS for c in ("traj. error", "FD", "σ_skip")],
    ]
    lines += [
        f"Sampling quality of the final EMA models (trajectory error: RMS to each model's own exact "
        f"endpoints, seeds 0..{cfg['seeds'] - 1}; FD: 2 Frechet seeds x {cfg['frechet_samples']} samples; "
        f"σ_skip calibrated on seeds 10000..{10_000 + cfg['calibration_seeds'] - 1} among "
        f"{', '.join(map(str, cfg['candidates']))}):",
        "",
        markdown_table(qheader, qrows),
        "",
    ]
    # The shipped model (plain, 3000 steps) measured the same way, for scale.
    shipped = gaussport.digits.load_digits_denoiser()
    _, _, x_test = _data()
    # Where each form helps: the unweighted denoising error per noise level.
    gaussian = gaussport.digits.load_digits_gaussian()
    levels: dict[str, list[float]] = {
        "gaussian (D_G alone)": per_level_error(lambda x, s: gaussian(x, s), x_test)
    }
    for m in MODELS:
        for s in args.seeds:
            levels[f"{m} seed {s}"] = per_level_error(load_model(args.work, m, s, steps), x_test)
    levels["shipped (plain, 3000 steps)"] = per_level_error(shipped, x_test)
    result["per_level_error"] = {"levels": list(LEVELS), **levels}
    level_rows = [[name, *[f"{v:.3g}" for v in values]] for name, values in levels.items()]
    for s in args.seeds:
        ratio = [r / p for r, p in zip(levels[f"residual seed {s}"], levels[f"plain seed {s}"], strict=True)]
        level_rows.append([f"residual / plain, seed {s}", *[f"{v:.3f}" for v in ratio]])
    lines += [
        "Unweighted denoising error |D(x0 + σ ε, σ) - x0|² per pixel on the test split, per noise level "
        "(4 fixed noise draws per image):",
        "",
        markdown_table(["model", *[f"σ={v:g}" for v in LEVELS]], level_rows),
        "",
    ]
    reference = {
        "held_out_loss": held_out_loss(shipped, x_test, None, repeats=4),
        "frechet": gaussport.digits.DigitsFrechet()(_heun_samples(shipped, cfg["curve_samples"])),
    }
    result["shipped_model"] = reference
    lines += [
        f"For scale, the shipped model (plain, 3000 steps) on the same metrics: held-out loss "
        f"{reference['held_out_loss']:.4g}, FD {reference['frechet']:.4g}.",
        "",
    ]
    result["markdown"] = "\n".join(lines)
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    with atomic_writer(out / f"digits_training{suffix}.json", "w") as f:
        f.write(json.dumps(result, indent=1))
    with atomic_writer(out / f"digits_training{suffix}.md", "w") as f:
        f.write(result["markdown"])
    _plots(records, quality, args, cfg, suffix, seconds)
    print(result["markdown"])
    return result


def _plots(
    records: dict,
    quality: dict,
    args: argparse.Namespace,
    cfg: dict[str, Any],
    suffix: str,
    seconds: dict[str, float],
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is missing: no plots")
        return
    img = args.img
    img.mkdir(parents=True, exist_ok=True)
    colors = {"plain": "tab:blue", "residual": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (m, s), r in records.items():
        ev = r["evaluations"]
        t = [e["step"] * seconds[m] for e in ev]  # the interleaved step time: same load for both
        label = f"{m} (seed {s})"
        axes[0].plot(t, [e["held_out_loss"] for e in ev], "o-", color=colors[m], label=label, alpha=0.8)
        axes[1].plot(t, [e["frechet"] for e in ev], "o-", color=colors[m], label=label, alpha=0.8)
    axes[0].set(
        xlabel="training time (s, one thread; steps x measured step time)",
        ylabel="held-out EDM loss",
        yscale="log",
    )
    axes[1].set(
        xlabel="training time (s, one thread; steps x measured step time)",
        ylabel="digits Frechet distance",
        yscale="log",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Digits: plain vs Gaussian-residual network, {cfg['steps']} steps")
    fig.tight_layout()
    fig.savefig(img / f"digits-training-curves{suffix}.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"none": "--", "teleport": "-"}
    for (m, s), rows in quality.items():
        for solver in cfg["solvers"]:
            for mode in ("none", "teleport"):
                hits = [q for q in rows if q["solver"] == solver and q["mode"] == mode]
                nfe = [h["nfe"] for h in hits]
                label = f"{m} {solver} {'teleport' if mode == 'teleport' else 'plain'}"
                marker = "o" if solver == cfg["solvers"][0] else "s"
                axes[0].plot(
                    nfe,
                    [h["error"] for h in hits],
                    marker + styles[mode],
                    color=colors[m],
                    label=label if s == args.seeds[0] else None,
                )
                axes[1].plot(
                    nfe,
                    [h["frechet_mean"] for h in hits],
                    marker + styles[mode],
                    color=colors[m],
                    label=label if s == args.seeds[0] else None,
                )
    axes[0].set(xlabel="NFE", ylabel="trajectory error (RMS to exact endpoint)", yscale="log")
    axes[1].set(xlabel="NFE", ylabel="digits Frechet distance", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Sampling quality of the trained models (dashed: no teleport, solid: teleport)")
    fig.tight_layout()
    fig.savefig(img / f"digits-training-nfe{suffix}.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("train", "report", "all"))
    parser.add_argument("--model", choices=MODELS, default="plain", help="the model to train (stage train)")
    parser.add_argument("--seed", type=int, default=0, help="the training seed (stage train)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the training seeds to report")
    parser.add_argument("--steps", type=int, help="training steps (default 1500; --quick 40)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default 250)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, samples, seeds")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "digits_training")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cfg = dict(QUICK if args.quick else FULL)
    if args.steps:
        cfg["steps"] = args.steps
    if args.eval_every:
        cfg["eval_every"] = args.eval_every
    t0 = time.perf_counter()
    if args.stage in ("train", "all"):
        for model in MODELS if args.stage == "all" else (args.model,):
            for seed in args.seeds if args.stage == "all" else (args.seed,):
                train(argparse.Namespace(**{**vars(args), "model": model, "seed": seed}), cfg)
    if args.stage in ("report", "all"):
        report(args, cfg)
    logger.info("done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
