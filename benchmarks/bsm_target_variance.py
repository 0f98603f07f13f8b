"""How noisy is the gated bootstrap target, against the DSM target, as a function of the level spacing?

Target data: an analytic Gaussian mixture (K = 8 components in d = 32, means at radius 3 in random
directions, anisotropic components with standard deviations log-spaced over 0.05..0.5, unequal weights),
so the exact denoiser ``D*`` is known. For a pair of levels ``sigma_s = sigma_t / ratio < sigma_t`` and
exact samples ``x0``, ``x_s = x0 + sigma_s eps1``, ``x_t = x_s + sqrt(sigma_t^2 - sigma_s^2) eps2``:

* DSM target ``x0``;
* gated bootstrap target :func:`gaussport.training.gated_bootstrap_target` with the *exact* teacher
  ``D*(., sigma_s)`` and the mixture's moment-matched Gaussian as gate;
* naive bootstrap target ``x_t + sigma_t^2 s*(x_s, sigma_s)`` (the lower level's score, ungated).

Reported per (sigma_t, ratio): the mean squared deviation of each target from ``D*(x_t, sigma_t)``
(all three are conditionally unbiased, so this is their conditional variance), as a ratio to DSM's,
and the largest |mean| / standard error of the gated target's bias statistics (unbiasedness check).
This isolates the target's variance from training; what it does to a trained model is measured by
benchmarks/training_gmm.py.

Usage::

    PYTHONPATH=src python benchmarks/bsm_target_variance.py --quick   # ~10 s
    PYTHONPATH=src python benchmarks/bsm_target_variance.py           # 20,000 samples per cell

Writes ``benchmarks/results/bsm_target_variance.json`` / ``.md``. One torch thread; load average noted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

from gaussport._files import atomic_writer
from gaussport.analytic import Gaussian, GaussianMixture
from gaussport.training import gated_bootstrap_target

SIGMAS_T = (0.1, 0.3, 0.6, 1.2, 2.4, 4.8)
RATIOS = (1.05, 1.1, 1.2, 1.4, 1.6, 2.0)


def mixture(dim: int = 32, k: int = 8, seed: int = 0) -> GaussianMixture:
    gen = torch.Generator().manual_seed(seed)
    comps = []
    for _ in range(k):
        direction = torch.randn(dim, generator=gen, dtype=torch.float64)
        mean = 3.0 * direction / direction.norm()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        std = torch.logspace(math.log10(0.05), math.log10(0.5), dim, dtype=torch.float64)
        comps.append(Gaussian(mean, (q * std**2) @ q.T))
    weights = 1.0 + 2.0 * torch.rand(k, generator=gen, dtype=torch.float64)
    return GaussianMixture(comps, weights)


def measure(target: GaussianMixture, n: int, seed: int) -> list[dict[str, float]]:
    gate = target.moments()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for sigma_t in SIGMAS_T:
        for ratio in RATIOS:
            sigma_s = sigma_t / ratio
            x0 = target.sample(n, generator=gen, dtype=torch.float64)
            s_s = torch.full((n,), sigma_s, dtype=torch.float64)
            s_t = torch.full((n,), sigma_t, dtype=torch.float64)
            x_s = x0 + sigma_s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            step = math.sqrt(sigma_t**2 - sigma_s**2)
            x_t = x_s + step * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            truth = target(x_t, s_t)
            teacher_s = target(x_s, s_s)
            gated = gated_bootstrap_target(lambda x, s, d=teacher_s: d, gate, x_s, s_s, x_t, s_t)
            naive = x_t + (sigma_t / sigma_s) ** 2 * (teacher_s - x_s)
            dsm = float((x0 - truth).square().sum(1).mean())
            e = gated - truth
            probe = truth - gate(x_t, s_t)
            stats = torch.cat([e, (e * probe).sum(1, keepdim=True)], 1)
            z = float((stats.mean(0).abs() / (stats.std(0) / math.sqrt(n))).max())
            rows.append(
                {
                    "sigma_t": sigma_t,
                    "ratio": ratio,
                    "dsm": dsm,
                    "gated": float(e.square().sum(1).mean()),
                    "naive": float((naive - truth).square().sum(1).mean()),
                    "non_gaussian": float(probe.square().sum(1).mean()),
                    "max_bias_z": z,
                }
            )
    return rows


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"Gated / DSM target variance (d = {result['dim']}, K = 8 mixture, exact teacher, "
        f"{result['samples']} samples per cell, seed {result['seed']}; load average "
        f"{result['load_start']:.1f} -> {result['load_end']:.1f}; {result['seconds']:.0f} s):",
        "",
        "| sigma_t | " + " | ".join(f"ratio {r:g}" for r in RATIOS) + " | naive / DSM at ratio 1.1 |",
        "|---|" + "---|" * (len(RATIOS) + 1),
    ]
    for sigma_t in SIGMAS_T:
        cells = [r for r in rows if r["sigma_t"] == sigma_t]
        ratios = " | ".join(f"{r['gated'] / r['dsm']:.3g}" for r in cells)
        naive = next(r for r in cells if r["ratio"] == 1.1)
        lines.append(f"| {sigma_t:g} | {ratios} | {naive['naive'] / naive['dsm']:.3g} |")
    worst = max(r["max_bias_z"] for r in rows)
    lines += [
        "",
        f"Unbiasedness: the largest |mean| / standard error over all cells and {result['dim'] + 1} bias "
        f"statistics per cell is {worst:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 samples per cell")
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    n = 2_000 if args.quick else args.samples
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    target = mixture()
    rows = measure(target, n, args.seed)
    result = {
        "dim": target.dim,
        "samples": n,
        "seed": args.seed,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    out = os.path.join(
        os.path.dirname(__file__), "results", "bsm_target_variance" + ("_quick" if args.quick else "")
    )
    with atomic_writer(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    text = markdown(result)
    with atomic_writer(out + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
