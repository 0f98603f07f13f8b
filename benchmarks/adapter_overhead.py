"""Per-step overhead of gaussport's adapters, against the peers they replace, measured in the same run.

For one diffusers ``UNet2DModel`` (randomly initialised, built offline) it times

* the model alone (one call per step: the floor every sampler pays);
* a pipeline-style loop (``scale_model_input`` -> model -> ``step``) with diffusers'
  ``EulerDiscreteScheduler`` (Karras sigmas) and with ``GaussportScheduler`` (euler);
* k-diffusion's ``sample_euler`` around ``DiscreteEpsDDPMDenoiser`` and gaussport's
  k-diffusion-signature ``sample_euler`` around the same wrapper (skipped if k-diffusion is missing);
* ``gaussport.solve`` with ``DiffusersDenoiser``.

Each loop runs ``--steps`` steps; the table gives the time per step, the overhead over the model's own
time per call (``(loop - model) / model``) and the ratio against the peer: the fastest of
``--repeats`` interleaved runs after a warm-up. Usage::

    python benchmarks/adapter_overhead.py --device cuda --size 64 --batch 8
    python benchmarks/adapter_overhead.py --device cpu --size 32 --batch 4 --steps 20
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch

import gaussport
from gaussport import grids


def _timer(device: torch.device) -> Callable[[], float]:
    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


def _best_times(
    configs: dict[str, Callable[[], object]], now: Callable[[], float], repeats: int
) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each configuration, the configurations interleaved.

    Interleaving spreads background load over all configurations alike; the minimum is the run least
    disturbed by it (on a shared machine the median is not).
    """
    for fn in configs.values():
        fn()  # warm-up (allocations, cached device tables, cudnn autotuning)
    best = {name: float("inf") for name in configs}
    for _ in range(repeats):
        for name, fn in configs.items():
            start = now()
            fn()
            best[name] = min(best[name], now() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import diffusers

    from gaussport.adapters import k_diffusion as gk
    from gaussport.adapters.diffusers import DiffusersDenoiser, GaussportScheduler

    device = torch.device(args.device)
    now = _timer(device)
    torch.manual_seed(0)
    unet = (
        diffusers.UNet2DModel(
            sample_size=args.size,
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(args.channels),
            layers_per_block=1,
            norm_num_groups=8,
            down_block_types=("DownBlock2D",) * len(args.channels),
            up_block_types=("UpBlock2D",) * len(args.channels),
        )
        .eval()
        .to(device)
    )
    euler = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    ours = GaussportScheduler()
    noise = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def pipeline_loop(scheduler: object) -> Callable[[], object]:
        def run() -> object:
            scheduler.set_timesteps(args.steps, device=device)
            x = noise * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
            return x

        return run

    def model_only() -> object:  # the same model calls with no sampler around them
        euler.set_timesteps(args.steps, device=device)
        for t in euler.timesteps:
            unet(noise, t)
        return None

    den = DiffusersDenoiser(unet, euler)
    grid = grids.karras(args.steps, den.sigma_min, den.sigma_max)
    configs: dict[str, Callable[[], object]] = {
        "model": model_only,
        "euler": pipeline_loop(euler),
        "ours": pipeline_loop(ours),
        "solve": lambda: gaussport.solve(den, noise * grid[0], grid, "euler", disable=True),
    }
    try:
        import k_diffusion

        wrapper = k_diffusion.external.DiscreteEpsDDPMDenoiser(
            lambda x, t: unet(x, t).sample, euler.alphas_cumprod, quantize=False
        ).to(device)
        sigmas = k_diffusion.sampling.get_sigmas_karras(
            args.steps, float(wrapper.sigma_min), float(wrapper.sigma_max), device=device
        )
        configs["k"] = lambda: k_diffusion.sampling.sample_euler(
            wrapper, noise * sigmas[0], sigmas, disable=True
        )
        configs["gk"] = lambda: gk.sample_euler(wrapper, noise * sigmas[0], sigmas, disable=True)
    except ImportError:
        pass
    with torch.no_grad():
        best = {k: v / args.steps for k, v in _best_times(configs, now, args.repeats).items()}
    model_time = best["model"]
    rows = [
        ("diffusers EulerDiscreteScheduler loop", best["euler"], "peer"),
        (
            "GaussportScheduler(euler) loop",
            best["ours"],
            f"{best['ours'] / best['euler']:.3f} x EulerDiscreteScheduler",
        ),
        (
            "gaussport.solve(DiffusersDenoiser, euler)",
            best["solve"],
            f"{best['solve'] / best['euler']:.3f} x EulerDiscreteScheduler",
        ),
    ]
    if "k" in best:
        rows.append(("k-diffusion sample_euler (DiscreteEpsDDPMDenoiser)", best["k"], "peer"))
        rows.append(
            (
                "gaussport sample_euler (same wrapper)",
                best["gk"],
                f"{best['gk'] / best['k']:.3f} x k-diffusion",
            )
        )

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; UNet2DModel {args.size}x{args.size}, channels {args.channels}, batch {args.batch}, "
        f"{args.steps} steps, torch {torch.__version__}"
    )
    print(f"model alone: {model_time * 1e3:.2f} ms per call (fastest of {args.repeats} interleaved runs)\n")
    print("| loop | ms per step | overhead over the model | vs peer |")
    print("|---|---|---|---|")
    for label, t, versus in rows:
        print(f"| {label} | {t * 1e3:.2f} | {100 * (t - model_time) / model_time:+.1f} % | {versus} |")


if __name__ == "__main__":
    main()
