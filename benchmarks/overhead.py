"""Solver overhead: time per step of gaussport's euler/heun vs k-diffusion's sample_euler/sample_heun.

The denoiser is nearly free (``D(x, sigma) = 0.5 * x``), so the time measured is the solvers' own
per-step work: sigma handling, the update arithmetic, callbacks, progress-bar plumbing. Each
configuration runs both implementations interleaved (ABAB...) in one process and reports the ratio
of their median times, so machine load affects both alike.

    python benchmarks/overhead.py                 # batch 1 and 64, [B, 3, 32, 32], 100 steps
    python benchmarks/overhead.py --device cuda   # on a GPU (sigmas as k-diffusion users pass them)

Writes a Markdown table to stdout and to ``benchmarks/out/overhead.md`` (plus JSON).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch

import gaussport

warnings.filterwarnings("ignore", category=UserWarning)


def near_free_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_runs(fn, device: torch.device, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repetitions per implementation")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32])
    parser.add_argument("--device", default="cpu")
    # One intra-op thread by default: with two OpenMP threads on a shared 2-core machine, a thread
    # descheduled by another process stalls every parallel op (measured: 60x swings between runs).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = parser.parse_args()

    import k_diffusion.sampling as ks

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grid = gaussport.grids.karras(args.steps, 0.002, 80.0)
    k_sigmas = torch.tensor(grid, dtype=torch.float32, device=device)
    pairs = {"euler": ks.sample_euler, "heun": ks.sample_heun}
    rows = []
    for batch in args.batches:
        x = 80.0 * torch.randn((batch, *args.shape), generator=torch.Generator().manual_seed(0)).to(device)
        for name, k_fn in pairs.items():
            ours = functools.partial(gaussport.solve, near_free_denoiser, x, grid, name, disable=True)
            theirs = functools.partial(k_fn, near_free_denoiser, x, k_sigmas, disable=True)
            for fn in (ours, theirs):  # warm-up
                fn()
            t_ours, t_theirs = [], []
            for _ in range(args.repeats):
                t_ours += time_runs(ours, device, 1)
                t_theirs += time_runs(theirs, device, 1)
            nfe = gaussport.solvers.get(name).evaluations(grid)
            med_o, med_t = statistics.median(t_ours), statistics.median(t_theirs)
            rows.append(
                {
                    "solver": name,
                    "batch": batch,
                    "steps": args.steps,
                    "nfe": nfe,
                    "ours_us_per_step": 1e6 * med_o / args.steps,
                    "kdiff_us_per_step": 1e6 * med_t / args.steps,
                    "ratio": med_o / med_t,
                }
            )
    env = (
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"device {device}, x shape [B, {', '.join(map(str, args.shape))}], {args.steps} steps, "
        f"median of {args.repeats} interleaved runs"
    )
    lines = [
        f"Environment: {env}",
        "",
        "| solver | batch | gaussport (us/step) | k-diffusion (us/step) | ratio gaussport / k-diffusion |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['solver']} | {r['batch']} | {r['ours_us_per_step']:.1f} | {r['kdiff_us_per_step']:.1f} "
            f"| {r['ratio']:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "overhead.json"), "w") as f:
        json.dump({"environment": env, "rows": rows, "argv": sys.argv}, f, indent=2)


if __name__ == "__main__":
    main()
