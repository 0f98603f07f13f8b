"""Training benchmark: error to the exact denoiser per noise level after one training budget.

The target is an analytic Gaussian mixture (K = 8 components in d = 32 by default, means at radius 3,
anisotropic component covariances with small standard deviations, unequal weights), so the exact
denoiser ``D*(x, sigma)`` and exact samples of every noisy marginal are known. Four arms train the same
small MLP ``F(x_in, c_noise)`` (3 x 128 SiLU, Fourier features of ``c_noise``, zero-initialised last
layer) on the same ``n`` training points, with the same seeds, steps, batch and noise draws:

* ``dsm``: plain denoising score matching, ``F`` under EDM preconditioning (``c_skip``, ``c_out``,
  ``c_in`` with ``sigma_data`` = the training data's standard deviation);
* ``bsm``: the same network, Bootstrapped Score Matching
  (:func:`gaussport.training.losses.bootstrapped_dsm_loss`, Gaussian gate, mix 0.5 above the burn-in
  level, a DSM warm-up over the first 30 % of the steps, an EMA copy of the model as the teacher --
  never the analytic Gaussian);
* ``residual``: :class:`gaussport.training.residual.GaussianResidualDenoiser` around the Gaussian
  fitted to the ``n`` training points, plain DSM;
* ``residual+bsm``: both.

All arms use :func:`bootstrapped_dsm_loss` (the DSM arms with ``mix=0``, its plain DSM loss), so the
noise levels and noise draws are identical across arms. Two data regimes: ``fresh`` (new noise every
step, the usual practice) and ``fixed`` (every training point owns a fixed set of noisy copies, drawn
once: a finite training set of noisy samples).

Metric per noise level ``sigma`` (on fresh exact samples ``x`` of the noisy marginal): the relative
error ``E|D_theta - D*|^2 / E|D* - x|^2`` (the squared relative velocity error, what a sampler feels),
the score error ``E|s_theta - s|^2 = E|D_theta - D*|^2 / sigma^4``, and their averages over
``log sigma``. The Gaussian fitted to the training data is measured as a reference (zero training).

Usage::

    PYTHONPATH=src python benchmarks/training_gmm.py --quick          # ~1 CPU minute, one seed
    PYTHONPATH=src python benchmarks/training_gmm.py                  # full run (3 seeds, both regimes)
    PYTHONPATH=src python benchmarks/training_gmm.py --dim 64 --tag d64

Writes ``benchmarks/results/training_gmm[_<tag>].json`` / ``.md`` and
``docs/img/training-gmm[-<tag>].png``. One torch thread; the load average is recorded.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gaussport._files import atomic_writer
from gaussport.analytic import Dense, Gaussian, GaussianMixture

logger = logging.getLogger("gaussport.benchmarks")

ARMS = ("dsm", "bsm", "residual", "residual+bsm")
# Untrained references: the Gaussian fitted to the n training points (the residual arm's start) and
# the mixture's exact moment-matched Gaussian (the limit n -> infinity).
REFERENCES = ("gaussian_moments", "gaussian_fit")
REGIMES = ("fresh", "fixed")
EVAL_SEED = 10_000  # evaluation samples: one set for every arm and seed, disjoint from training seeds
# Burn-in of the bootstrap in EDM units for unit-variance data (OU time 0.1, sigma = sqrt(e^0.2 - 1));
# scaled by the data's standard deviation below.
SIGMA_BURN_UNIT = math.sqrt(math.expm1(0.2))


# ---------------------------------------------------------------------------- target


def mixture_target(dim: int, n_components: int = 8, *, seed: int = 0) -> GaussianMixture:
    """K components, means at radius 3 in random directions, anisotropic covariances, unequal weights.

    Each component has a random orthonormal basis and standard deviations log-spaced over 0.05..0.5
    (variances 2.5e-3..0.25); weights are ``1 + 2 u``, ``u ~ U(0, 1)`` (ratios up to 3).
    """
    gen = torch.Generator().manual_seed(seed)
    comps = []
    for _ in range(n_components):
        direction = torch.randn(dim, generator=gen, dtype=torch.float64)
        mean = 3.0 * direction / direction.norm()
        basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        std = torch.exp(torch.linspace(math.log(0.5), math.log(0.05), dim, dtype=torch.float64))
        comps.append(Gaussian(mean, Dense(std**2, basis)))
    weights = 1.0 + 2.0 * torch.rand(n_components, generator=gen, dtype=torch.float64)
    return GaussianMixture(comps, weights)


# ---------------------------------------------------------------------------- networks


class FourierMLP(nn.Module):
    """``F(x_in, c_noise)``: an MLP on ``[x_in, c_noise, sin/cos(pi 2^j c_noise)]``, last layer zero.

    With the last layer zero the network outputs 0, so the residual arm starts exactly at the
    Gaussian denoiser and the EDM-preconditioned arm at ``c_skip x``.
    """

    def __init__(self, dim: int, width: int = 128, depth: int = 3, frequencies: int = 8) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32))
        layers: list[nn.Module] = []
        width_in = dim + 1 + 2 * frequencies
        for _ in range(depth):
            layers += [nn.Linear(width_in, width), nn.SiLU()]
            width_in = width
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        c = c_noise.to(x_in.dtype).reshape(-1, 1).expand(x_in.shape[0], 1)
        angles = c * self.freqs
        return self.body(torch.cat([x_in, c, angles.sin(), angles.cos()], dim=1))


class EDMPreconditioned(nn.Module):
    """EDM's denoiser ``D = c_skip x + c_out F(c_in x, c_noise)`` for a scalar ``sigma_data``.

    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4``; loss weight ``1 / c_out^2``
    (EDM's lambda). The same ``c_noise`` as the residual denoiser so both arms see the same inputs.
    """

    def __init__(self, network: nn.Module, sigma_data: float) -> None:
        super().__init__()
        self.network = network
        self.sigma_data = float(sigma_data)

    def _sigma(self, sigma: Tensor | float, like: Tensor) -> Tensor:
        return torch.as_tensor(sigma, dtype=like.dtype, device=like.device).expand(like.shape[0])

    def c_out(self, sigma: Tensor) -> Tensor:
        sd = self.sigma_data
        return sigma * sd / torch.sqrt(sigma**2 + sd**2)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        return 1.0 / self.c_out(sigma) ** 2

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = self._sigma(sigma, x)
        sd2 = self.sigma_data**2
        c_skip = (sd2 / (s**2 + sd2))[:, None]
        c_in = (1.0 / torch.sqrt(s**2 + sd2))[:, None]
        return c_skip * x + self.c_out(s)[:, None] * self.network(c_in * x, s.log() / 4)


def build_model(arm: str, dim: int, gaussian: Gaussian, sigma_data: float, seed: int) -> nn.Module:
    """The arm's denoiser; the network's initialisation depends on ``seed`` only (equal across arms)."""
    from gaussport.training.residual import GaussianResidualDenoiser

    torch.manual_seed(seed)
    network = FourierMLP(dim)
    if arm.startswith("residual"):
        return GaussianResidualDenoiser(network, gaussian, sigma_data=sigma_data)
    return EDMPreconditioned(network, sigma_data)


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Setup:
    dim: int
    n: int
    regime: str
    steps: int
    batch: int
    copies: int  # fixed regime: noisy copies per training point
    levels: tuple[float, ...]
    sigma_burn: float
    mix: float
    warmup: float
    teacher_decay: float
    lr: float


def train(
    arm: str, data: Tensor, gaussian: Gaussian, sigma_data: float, setup: Setup, seed: int
) -> tuple[nn.Module, float, list[float]]:
    """Train one arm; returns the model, the training wall time (s) and the loss every 100 steps.

    Noise: ``fresh`` draws every batch's levels and noise from a generator seeded by (seed, step);
    ``fixed`` splits ``copies`` replicas of the data into batches once and seeds each batch's
    generator by (seed, batch index), so every step sees one of the same few noisy batches again.
    """
    from gaussport.training.losses import bootstrapped_dsm_loss

    model = build_model(arm, data.shape[1], gaussian, sigma_data, seed)
    model.train()
    bootstrap = arm.endswith("bsm")
    teacher = copy.deepcopy(model).requires_grad_(False) if bootstrap else None
    opt = torch.optim.Adam(model.parameters(), lr=setup.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=setup.steps)
    levels = torch.tensor(setup.levels, dtype=torch.float32)
    order = torch.Generator().manual_seed(1_000_003 * seed + 17)
    pool = data.repeat(setup.copies if setup.regime == "fixed" else 1, 1)
    chunks = max(1, pool.shape[0] // setup.batch)
    perm = torch.randperm(pool.shape[0], generator=order)
    warmup_steps = int(round(setup.warmup * setup.steps))
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(setup.steps):
        j = step % chunks
        if setup.regime == "fresh":
            if j == 0 and step > 0:
                perm = torch.randperm(pool.shape[0], generator=order)
            noise_seed = 7919 * seed + 1_000_000 + step
        else:
            noise_seed = 7919 * seed + j
        x0 = pool[perm[j * setup.batch : (j + 1) * setup.batch]]
        if x0.shape[0] < setup.batch:  # fewer points than the batch: take them repeatedly
            x0 = x0.repeat(math.ceil(setup.batch / x0.shape[0]), 1)[: setup.batch]
        gen = torch.Generator().manual_seed(noise_seed)
        mix = setup.mix if bootstrap and step >= warmup_steps else 0.0
        loss = bootstrapped_dsm_loss(
            model,
            x0,
            teacher=teacher if teacher is not None else model,
            gaussian=gaussian,
            levels=levels,
            mix=mix,
            sigma_burn=setup.sigma_burn,
            generator=gen,
            weighting="denoiser",
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if teacher is not None:
            with torch.no_grad():
                for pt, p in zip(teacher.parameters(), model.parameters(), strict=True):
                    pt.lerp_(p, 1.0 - setup.teacher_decay)
        if step % 100 == 0 or step == setup.steps - 1:
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                logger.warning("%s seed %d: loss not finite at step %d", arm, seed, step)
                break
    model.eval()
    return model, time.perf_counter() - start, losses


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalSet:
    sigmas: tuple[float, ...]
    x: tuple[Tensor, ...]  # float64 noisy samples per sigma
    exact: tuple[Tensor, ...]  # D*(x, sigma), float64


def eval_set(mixture: GaussianMixture, sigmas: Sequence[float], samples: int) -> EvalSet:
    gen = torch.Generator().manual_seed(EVAL_SEED)
    xs, exact = [], []
    for s in sigmas:
        x = mixture.sample(samples, s, gen, dtype=torch.float64)
        xs.append(x)
        exact.append(mixture(x, torch.full((samples,), s, dtype=torch.float64)))
    return EvalSet(tuple(sigmas), tuple(xs), tuple(exact))


def errors(
    denoise: Callable[[Tensor, Tensor], Tensor], ev: EvalSet, dtype: torch.dtype
) -> dict[str, list[float]]:
    """Per sigma: relative error ``E|D - D*|^2 / E|D* - x|^2`` and score error ``E|D - D*|^2 / sigma^4``."""
    rel, score = [], []
    with torch.no_grad():
        for s, x, d_star in zip(ev.sigmas, ev.x, ev.exact, strict=True):
            sig = torch.full((x.shape[0],), s, dtype=dtype)
            d = denoise(x.to(dtype), sig).double()
            sq = ((d - d_star) ** 2).sum(1).mean()
            rel.append(float(sq / ((d_star - x) ** 2).sum(1).mean()))
            score.append(float(sq / s**4))
    return {"relative": rel, "score": score}


def log_average(values: Sequence[float], sigmas: Sequence[float], above: float = 0.0) -> float:
    """Trapezoid average over ``log sigma`` of ``values`` on the levels ``> above``."""
    pts = [(math.log(s), v) for s, v in zip(sigmas, values, strict=True) if s > above]
    if len(pts) < 2:
        return float("nan")
    area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:], strict=False))
    return area / (pts[-1][0] - pts[0][0])


# ---------------------------------------------------------------------------- run


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    mixture = mixture_target(args.dim)
    moments = mixture.moments()
    sigma_data_true = float(moments.cov.dense().diagonal().mean().sqrt())
    levels = tuple(
        float(v) for v in torch.logspace(math.log10(args.sigma_min), math.log10(args.sigma_max), args.levels)
    )
    ev = eval_set(mixture, levels, args.eval_samples)
    configs: list[dict[str, Any]] = []
    for n in args.n:
        for regime in args.regimes:
            config: dict[str, Any] = {"n": n, "regime": regime, "seeds": {}}
            for seed in args.seeds:
                gen = torch.Generator().manual_seed(seed)
                data = mixture.sample(n, 0.0, gen, dtype=torch.float64)
                gaussian = Gaussian.fit(data, disable=True, source=f"{n} training points, seed {seed}")
                sigma_data = float(data.std(0).pow(2).mean().sqrt())
                setup = Setup(
                    dim=args.dim,
                    n=n,
                    regime=regime,
                    steps=args.steps,
                    batch=args.batch,
                    copies=args.copies,
                    levels=levels,
                    sigma_burn=SIGMA_BURN_UNIT * sigma_data,
                    mix=args.mix,
                    warmup=args.warmup,
                    teacher_decay=args.teacher_decay,
                    lr=args.lr,
                )
                per_seed: dict[str, Any] = {
                    "sigma_data": sigma_data,
                    "sigma_burn": setup.sigma_burn,
                    "gaussian_fit": errors(gaussian, ev, torch.float64),
                    "gaussian_moments": errors(moments, ev, torch.float64),
                }
                for arm in args.arms:
                    model, seconds, losses = train(arm, data.float(), gaussian, sigma_data, setup, seed)
                    per_seed[arm] = {"seconds": seconds, "losses": losses, **errors(model, ev, torch.float32)}
                    logger.info(
                        "n=%d %s seed %d %-13s %6.1f s  rel err avg %.4g",
                        n,
                        regime,
                        seed,
                        arm,
                        seconds,
                        log_average(per_seed[arm]["relative"], levels),
                    )
                config["seeds"][str(seed)] = per_seed
            configs.append(config)
    return {
        "benchmark": "training_gmm",
        "command": "python benchmarks/training_gmm.py " + " ".join(args.argv),
        "environment": environment(),
        "target": {
            "dim": args.dim,
            "components": len(mixture),
            "description": "means at radius 3 in random directions, component std 0.05..0.5 "
            "(random bases), weights 1 + 2u",
            "sigma_data": sigma_data_true,
        },
        "training": {
            "steps": args.steps,
            "batch": args.batch,
            "copies_fixed": args.copies,
            "levels": levels,
            "mix": args.mix,
            "warmup": args.warmup,
            "teacher": f"EMA copy, decay {args.teacher_decay}",
            "sigma_burn_unit": SIGMA_BURN_UNIT,
            "lr": f"Adam {args.lr}, cosine to 0",
            "network": "MLP 3 x 128 SiLU, Fourier features of c_noise = log(sigma)/4, last layer zero",
        },
        "eval_samples": args.eval_samples,
        "arms": list(args.arms),
        "configs": configs,
    }


# ---------------------------------------------------------------------------- report


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


BANDS = (("all", 0.0, math.inf), ("low", 0.0, 0.3), ("mid", 0.3, 3.0), ("high", 3.0, math.inf))


def band_average(values: Sequence[float], sigmas: Sequence[float], lo: float, hi: float) -> float:
    sel = [(s, v) for s, v in zip(sigmas, values, strict=True) if lo <= s < hi]
    return log_average([v for _, v in sel], [s for s, _ in sel])


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per config and arm: band averages of the relative error (mean, std over seeds) and the paired
    per-seed ratio to the ``dsm`` arm (mean, std)."""
    levels = result["training"]["levels"]
    rows = []
    for config in result["configs"]:
        seeds = list(config["seeds"].values())
        for arm in [*REFERENCES, *result["arms"]]:
            row: dict[str, Any] = {"n": config["n"], "regime": config["regime"], "arm": arm}
            for band, lo, hi in BANDS:
                vals = [band_average(s[arm]["relative"], levels, lo, hi) for s in seeds]
                row[band] = _mean_std(vals)
                if "dsm" in result["arms"]:
                    ratios = [
                        band_average(s[arm]["relative"], levels, lo, hi)
                        / band_average(s["dsm"]["relative"], levels, lo, hi)
                        for s in seeds
                    ]
                    row[band + "_ratio"] = _mean_std(ratios)
            if arm not in REFERENCES:
                row["seconds"] = _mean_std([s[arm]["seconds"] for s in seeds])
            rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    t, tr = result["target"], result["training"]
    env = result["environment"]
    load = env["load_average"]
    seeds = sorted({int(k) for c in result["configs"] for k in c["seeds"]})
    lines = [
        f"# Training on an analytic Gaussian mixture (d = {t['dim']}, K = {t['components']})",
        "",
        f"Command: `{result['command']}`; torch {env['torch']}, {env['threads']} thread(s), load average "
        f"{', '.join(f'{v:.2f}' for v in load) if load else 'n/a'} (1/5/15 min, at the end).",
        f"Seeds {seeds}; {tr['steps']} steps, batch {tr['batch']}, {tr['lr']}; "
        f"{len(tr['levels'])} levels {tr['levels'][0]:.3g}..{tr['levels'][-1]:.3g}; "
        f"BSM mix {tr['mix']}, warm-up {tr['warmup']:.0%}, teacher {tr['teacher']}, burn-in "
        f"{tr['sigma_burn_unit']:.3f} x sigma_data; evaluation on {result['eval_samples']} exact samples "
        "per level.",
        "",
        "Relative error `E|D - D*|^2 / E|D* - x|^2`, averaged over log sigma in each band "
        "(low: sigma < 0.3, mid: 0.3..3, high: > 3); mean ± std over seeds; in brackets the paired "
        "per-seed ratio to `dsm`.",
        "",
        "| n | noise | arm | all | low | mid | high | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary(result):
        cells = []
        for band, _, _ in BANDS:
            m, sd = row[band]
            cell = f"{m:.3g} ± {sd:.1g}"
            if band + "_ratio" in row and row["arm"] != "dsm":
                rm, rsd = row[band + "_ratio"]
                cell += f" ({rm:.2f} ± {rsd:.2f})"
            cells.append(cell)
        secs = f"{row['seconds'][0]:.1f}" if "seconds" in row else "-"
        lines.append(f"| {row['n']} | {row['regime']} | {row['arm']} | " + " | ".join(cells) + f" | {secs} |")
    lines += ["", "Per level (relative error, mean over seeds):", ""]
    levels = tr["levels"]
    picks = [i for i in range(len(levels)) if i % max(1, len(levels) // 8) == 0] + [len(levels) - 1]
    picks = sorted(set(picks))
    header = "| n | noise | arm | " + " | ".join(f"{levels[i]:.3g}" for i in picks) + " |"
    lines += [header, "|" + "---|" * (3 + len(picks))]
    for config in result["configs"]:
        seeds_ = list(config["seeds"].values())
        for arm in [*REFERENCES, *result["arms"]]:
            vals = [sum(s[arm]["relative"][i] for s in seeds_) / len(seeds_) for i in picks]
            lines.append(
                f"| {config['n']} | {config['regime']} | {arm} | "
                + " | ".join(f"{v:.3g}" for v in vals)
                + " |"
            )
    return "\n".join(lines) + "\n"


COLORS = {
    "gaussian_moments": "0.75",
    "gaussian_fit": "0.5",
    "dsm": "C0",
    "bsm": "C1",
    "residual": "C2",
    "residual+bsm": "C3",
}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["training"]["levels"]
    configs = result["configs"]
    fig, axes = plt.subplots(2, len(configs), figsize=(4.2 * len(configs), 7), sharex=True, squeeze=False)
    for col, config in enumerate(configs):
        seeds = list(config["seeds"].values())
        top, bottom = axes[0, col], axes[1, col]
        for arm in [*REFERENCES, *result["arms"]]:
            curves = torch.tensor([s[arm]["relative"] for s in seeds])
            style = {"gaussian_fit": "--", "gaussian_moments": ":"}.get(arm, "-")
            label = {
                "gaussian_fit": "Gaussian fitted to the n points",
                "gaussian_moments": "exact moment-matched Gaussian",
            }.get(arm, arm)
            top.plot(levels, curves.mean(0), style, color=COLORS[arm], label=label)
            top.fill_between(levels, curves.min(0).values, curves.max(0).values, color=COLORS[arm], alpha=0.2)
            if "dsm" in result["arms"] and arm not in REFERENCES:
                ratio = curves / torch.tensor([s["dsm"]["relative"] for s in seeds])
                bottom.plot(levels, ratio.mean(0), style, color=COLORS[arm], label=label)
                bottom.fill_between(
                    levels, ratio.min(0).values, ratio.max(0).values, color=COLORS[arm], alpha=0.2
                )
        top.set(xscale="log", yscale="log", title=f"n = {config['n']}, {config['regime']} noise")
        bottom.set(xscale="log", yscale="log", xlabel="sigma")
        bottom.axhline(1.0, color="k", lw=0.5)
        if col == 0:
            top.set_ylabel("E|D - D*|^2 / E|D* - x|^2")
            bottom.set_ylabel("ratio to dsm (paired by seed)")
            top.legend(fontsize=8)
    t = result["target"]
    fig.suptitle(
        f"Gaussian mixture d = {t['dim']}, K = {t['components']}: error to the exact denoiser after "
        f"{result['training']['steps']} steps (line: mean, band: min-max over "
        f"{len(configs[0]['seeds'])} seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, n = 128, 400 steps (about a minute)")
    p.add_argument("--dim", type=_positive_int, default=32, help="data dimension (default 32)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n", type=_positive_int, nargs="+", default=[128, 512], help="training points")
    p.add_argument("--regimes", choices=REGIMES, nargs="+", default=list(REGIMES))
    p.add_argument("--arms", choices=ARMS, nargs="+", default=list(ARMS))
    p.add_argument("--steps", type=_positive_int, default=2000)
    p.add_argument("--batch", type=_positive_int, default=512)
    p.add_argument("--copies", type=_positive_int, default=8, help="fixed regime: noisy copies per point")
    p.add_argument("--levels", type=_positive_int, default=24, help="geometric noise levels")
    p.add_argument("--sigma-min", type=_positive_float, default=0.05)
    p.add_argument("--sigma-max", type=_positive_float, default=50.0)
    p.add_argument("--mix", type=_fraction, default=0.5, help="BSM weight on the bootstrap target")
    p.add_argument("--warmup", type=_fraction, default=0.3, help="fraction of steps with DSM only")
    p.add_argument("--teacher-decay", type=_fraction, default=0.99, help="EMA decay of the teacher")
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--eval-samples", type=_positive_int, default=4096)
    p.add_argument(
        "--tag", choices=["", "quick", "d64", "n128", "n512"], default=None, help="suffix of the output files"
    )
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--img", type=Path, default=Path("docs/img"))
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv
    if args.quick:
        args.seeds, args.n, args.steps, args.eval_samples = args.seeds[:1], [128], 400, 1024
    tag = args.tag if args.tag is not None else ("quick" if args.quick else "")
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    result["environment"] = environment()
    stem = "training_gmm" + (f"_{tag}" if tag else "")
    args.results.mkdir(parents=True, exist_ok=True)
    with atomic_writer(args.results / f"{stem}.json", "w") as f:
        json.dump(result, f, indent=1)
    report = markdown(result)
    with atomic_writer(args.results / f"{stem}.md", "w") as f:
        f.write(report)
    plot(result, args.img / (stem.replace("_", "-") + ".png"))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
