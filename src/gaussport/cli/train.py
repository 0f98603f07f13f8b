"""``gaussport train``: train a small denoiser on a data set with its statistics file.

The network is chosen from the sample shape (kept simple on purpose; for anything larger, write a
loop with :mod:`gaussport.training`):

* images ``[C, H, H]`` (H even): a :class:`gaussport.digits.DigitsUNet`-sized U-Net (two levels, 32
  and 64 channels, self-attention at the lower one, no labels);
* flat samples ``[d]``: an MLP (3 hidden layers of 256 SiLU units on ``[c_in x, Fourier(c_noise)]``).

Parameterisation: with ``--residual`` (the default) the denoiser is
:class:`gaussport.training.GaussianResidualDenoiser` ``D = D_G + c_out F`` on the statistics file's
Gaussian, trained with the loss weight ``1 / c_out^2``; with ``--no-residual`` EDM's preconditioning
``D = c_skip x + c_out F`` with ``sigma_data = sqrt(tr(Sigma) / d)`` of the statistics, EDM weighting.
``--bsm`` adds the opt-in :func:`gaussport.training.bootstrapped_dsm_loss` (EMA teacher).

Writes into ``--out``: ``denoiser.safetensors`` (EMA weights and the network's description;
:func:`load_trained_denoiser` rebuilds the denoiser), ``record.json`` (loss curve, timings, the
command) and ``checkpoint.safetensors`` (every ``--checkpoint-every`` steps; ``--resume`` continues
from it, bitwise as an uninterrupted run on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DENOISER_FILE", "RECORD_FILE", "add_parser", "check", "load_trained_denoiser", "run"]

DENOISER_FILE = "denoiser.safetensors"
RECORD_FILE = "record.json"
TRAINED_FORMAT = "gaussport.trained_denoiser"
TRAINED_VERSION = 1
STATS_SUFFIXES = (".safetensors", ".npz")
BSM_LEVELS = 64  # log-spaced levels of the bootstrap grid between sigma 0.002 and 80


# ---------------------------------------------------------------------- networks
class MLPNetwork(nn.Module):
    """EDM's ``F(x_in, c_noise)`` for flat samples ``[B, d]``: an MLP on ``[x_in, Fourier(c_noise)]``.

    The last layer starts at zero, so an untrained denoiser is its skip term (the Gaussian denoiser
    in the residual form).
    """

    def __init__(
        self, dim: int, *, hidden: int = 256, depth: int = 3, fourier: int = 32, seed: int = 0
    ) -> None:
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "depth": depth, "fourier": fourier}
        gen = torch.Generator().manual_seed(seed)
        widths = [dim + fourier] + [hidden] * depth
        with torch.device("meta"):  # allocate without drawing from the global RNG
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
            self.out = nn.Linear(hidden, dim)
        self.to_empty(device="cpu")
        self.fourier = fourier
        with torch.no_grad():
            for layer in self.layers:
                bound = math.sqrt(3.0 / layer.in_features)
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=gen) * 2 - 1) * bound)
                layer.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        freqs = torch.exp(torch.linspace(0.0, math.log(64.0), self.fourier // 2, device=x_in.device))
        angles = c_noise.reshape(-1, 1).to(x_in.dtype) * freqs.to(x_in.dtype)
        h = torch.cat([x_in, torch.cos(angles), torch.sin(angles)], dim=1)
        for layer in self.layers:
            h = nn.functional.silu(layer(h))
        return self.out(h)


class EDMDenoiser(nn.Module):
    """EDM's preconditioning around ``F``: ``D = c_skip x + c_out F(c_in x, log(sigma) / 4)``."""

    def __init__(self, network: nn.Module, sigma_data: float) -> None:
        super().__init__()
        self.network, self.sigma_data = network, float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1)
        s = s.expand(x.shape[0]) if s.numel() == 1 else s
        view = (-1,) + (1,) * (x.ndim - 1)
        d2 = self.sigma_data**2
        c_skip = (d2 / (s * s + d2)).reshape(view)
        c_out = (s * self.sigma_data / torch.sqrt(s * s + d2)).reshape(view)
        c_in = (1 / torch.sqrt(s * s + d2)).reshape(view)
        return c_skip * x + c_out * self.network(c_in * x, torch.log(s) / 4)


def _network(kind: str, config: dict[str, Any], seed: int) -> nn.Module:
    if kind == "mlp":
        return MLPNetwork(**config, seed=seed)
    from ..digits.train import _RawUNet
    from ..digits.unet import DigitsUNet

    return _RawUNet(DigitsUNet(**config, generator=torch.Generator().manual_seed(seed)))


def _architecture(shape: tuple[int, ...], sigma_data: float) -> tuple[str, dict[str, Any]]:
    """The network kind and its configuration for samples of ``shape`` (module docstring)."""
    if len(shape) == 1:
        return "mlp", {"dim": shape[0]}
    if len(shape) == 3 and shape[1] == shape[2] and shape[1] % 2 == 0:
        return "unet", {
            "img_resolution": shape[1],
            "img_channels": shape[0],
            "label_dim": 0,
            "sigma_data": sigma_data,
        }
    raise ValueError(
        f"gaussport train builds a network for flat samples [d] or square images [C, H, H] with H even; "
        f"the data have samples of shape {list(shape)}. Reshape the data, or write a loop with "
        "gaussport.training (Trainer, edm_loss, GaussianResidualDenoiser) around your own network."
    )


def _denoiser(network: nn.Module, gaussian: Any, residual: bool, sigma_data: float) -> nn.Module:
    if residual:
        from ..training import GaussianResidualDenoiser

        return GaussianResidualDenoiser(network, gaussian)
    return EDMDenoiser(network, sigma_data)


def load_trained_denoiser(directory: str | os.PathLike[str]) -> nn.Module:
    """The EMA denoiser ``gaussport train --out DIR`` wrote (eval mode, no gradients, CPU).

    The residual form needs the statistics file it was trained with, read from the path recorded
    in the file (relative paths: from the current directory at training time).
    """
    from .._files import Array, read_safetensors
    from ..analytic import Gaussian

    path = Path(directory) / DENOISER_FILE
    meta, arrays = read_safetensors(
        path,
        TRAINED_FORMAT,
        TRAINED_VERSION,
        what="trained denoiser",
        arrays=lambda m: {k: Array() for k in m["keys"]},
        fields={
            "network": (str,),
            "config": (dict,),
            "residual": (bool,),
            "statistics": (str,),
            "keys": (list,),
        },
    )
    gaussian = Gaussian.load(meta["statistics"])
    model = _denoiser(
        _network(meta["network"], meta["config"], 0), gaussian, meta["residual"], meta["sigma_data"]
    )
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------- the command
def check(args: argparse.Namespace) -> None:
    """The flags together, the statistics file and the data's shape, before any work."""
    from ..analytic import Gaussian
    from ..analytic.sources import as_batches

    if args.residual and args.no_residual:
        raise ValueError("--residual and --no-residual contradict each other; give one of them.")
    if args.bsm and args.no_residual:
        raise ValueError("--bsm trains the Gaussian-residual form; drop --no-residual (or --bsm).")
    gaussian = Gaussian.load(args.statistics)
    source = as_batches(args.data, batch_size=1024, disable=True)
    shape = tuple(source.shape) if source.shape is not None else None
    if shape is not None and shape != tuple(gaussian.shape):
        raise ValueError(
            f"{args.statistics} describes samples of shape {list(gaussian.shape)} but {args.data} holds "
            f"{list(shape)}; give the statistics `gaussport fit {args.data}` wrote."
        )
    if source.count is not None and source.count < args.batch_size:
        raise ValueError(
            f"{args.data} holds {source.count} samples, fewer than --batch-size {args.batch_size}; give a "
            "smaller --batch-size."
        )
    sigma_data = math.sqrt(max(float(gaussian.cov.trace()), 1e-12) / gaussian.dim)
    args.network_kind, args.network_config = _architecture(tuple(gaussian.shape), sigma_data)
    args.gaussian, args.source, args.sigma_data = gaussian, source, sigma_data
    if args.resume is not None:
        from ..training.trainer import read_checkpoint

        read_checkpoint(args.resume)  # not a checkpoint, damaged: refused before training


def _loss(args: argparse.Namespace, teacher: list[nn.Module]) -> Any:
    from ..training import bootstrapped_dsm_loss, edm_loss

    residual = not args.no_residual
    weighting = "denoiser" if residual else "edm"
    if not args.bsm:
        return lambda model, x, gen: edm_loss(
            model, x, generator=gen, sigma_data=args.sigma_data, weighting=weighting
        )
    levels = torch.exp(torch.linspace(math.log(0.002), math.log(80.0), BSM_LEVELS, dtype=torch.float64))

    def loss(model: nn.Module, x: Tensor, gen: torch.Generator) -> Tensor:
        return bootstrapped_dsm_loss(
            model,
            x,
            teacher=teacher[0],
            gaussian=args.gaussian,
            levels=levels,
            sigma_burn=0.5 * args.sigma_data,
            generator=gen,
            weighting=weighting,
            sigma_data=args.sigma_data,
        )

    return loss


def run(args: argparse.Namespace) -> int:
    from .._files import atomic_writer, write_safetensors
    from ..training import Trainer, TrainerConfig

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    residual = not args.no_residual
    seed = args.seed
    network = _network(args.network_kind, args.network_config, seed)
    model = _denoiser(network, args.gaussian, residual, args.sigma_data)
    config = TrainerConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(200, args.steps // 10),
        ema_fraction=args.ema,
        batch_seed=seed + 1,
        noise_seed=seed + 2,
        global_seed=seed + 3,
        checkpoint_every=args.checkpoint_every,
    )
    teacher: list[nn.Module] = []
    trainer = Trainer(
        model,
        _loss(args, teacher),
        args.source,
        config=config,
        device=args.device,
        checkpoint_dir=args.out,
        disable=args.quiet or None,
    )
    teacher.append(trainer.ema)
    if args.resume is not None:
        trainer.load(args.resume)
    start = time.perf_counter()
    record = trainer.train()
    state = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in trainer.ema.state_dict().items()}
    meta = {
        "network": args.network_kind,
        "config": args.network_config,
        "residual": residual,
        "sigma_data": args.sigma_data,
        "statistics": os.fspath(args.statistics),
        "keys": sorted(state),
        "steps": trainer.step,
    }
    write_safetensors(args.out / DENOISER_FILE, TRAINED_FORMAT, TRAINED_VERSION, meta, state)
    record.update(
        command="gaussport " + " ".join(shlex.quote(a) for a in args.argv),
        data=args.source.description,
        network={"kind": args.network_kind, **args.network_config},
        residual=residual,
        bsm=args.bsm,
    )
    with atomic_writer(args.out / RECORD_FILE, "w") as f:
        f.write(json.dumps(record, indent=1))
    print(
        f"gaussport train: {trainer.step} steps in {time.perf_counter() - start:.0f} s, final loss "
        f"{record['final_loss']:.4g}; wrote {args.out / DENOISER_FILE} and {args.out / RECORD_FILE}"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport train`` and its flags, each declaring what it accepts."""
    from ..demo._arguments import DataPath, Device, Directory, Fraction, InputFile, Integer

    count = Integer(1)
    train = subparsers.add_parser(
        "train",
        help="train a small denoiser on images or a .npy/.npz file, with the Gaussian built in",
        description="Train a small denoiser on DATA -- a folder of PNG/JPEG images (scaled to [-1, 1]) or "
        "a .npy/.npz file [N, *sample_shape] -- with its statistics file (`gaussport fit DATA -o FILE`). "
        "The network follows the sample shape: square images [C, H, H] get a two-level U-Net, flat "
        "samples [d] an MLP. By default it learns only what the data's Gaussian misses "
        "(Gaussian-residual form D = D_G + c_out F: on the digits it reached a given Frechet distance in "
        "fewer steps early in training and gave 2-33% lower teleport trajectory errors, at a 3% higher "
        "held-out loss; docs/benchmarks.md); --no-residual uses EDM's preconditioning instead. Adam with "
        "warm-up and cosine decay, EMA weights, fixed seeds. Writes DIR/denoiser.safetensors (EMA "
        "weights), DIR/record.json and DIR/checkpoint.safetensors (--resume continues from it exactly). "
        "For anything larger write a loop with gaussport.training.",
    )
    train.add_argument(
        "data", type=DataPath(), metavar="DATA", help="a folder of images, or a .npy/.npz file"
    )
    train.add_argument(
        "--statistics",
        type=InputFile(STATS_SUFFIXES, "statistics"),
        required=True,
        metavar="FILE",
        help="the data's statistics file (gaussport fit)",
    )
    train.add_argument(
        "--out", type=Directory("output"), required=True, metavar="DIR", help="output directory"
    )
    form = train.add_mutually_exclusive_group()
    form.add_argument(
        "--residual", action="store_true", help="Gaussian-residual form D = D_G + c_out F (the default)"
    )
    form.add_argument(
        "--no-residual", action="store_true", help="EDM's preconditioning D = c_skip x + c_out F"
    )
    train.add_argument(
        "--bsm",
        action="store_true",
        help="opt-in, experimental: bootstrapped score matching (EMA teacher, 50%% bootstrap target above "
        "sigma_burn = sigma_data / 2)",
    )
    train.add_argument("--steps", type=count, default=3000, help="optimiser steps (default 3000)")
    train.add_argument("--batch-size", type=count, default=128, help="samples per step (default 128)")
    train.add_argument(
        "--lr",
        type=Fraction(0.0, 1.0, "a learning rate"),
        default=2e-3,
        help="peak Adam learning rate, in (0, 1] (default 0.002)",
    )
    train.add_argument(
        "--ema",
        type=Fraction(0.0, 1.0, "an EMA half-life fraction"),
        default=0.05,
        metavar="FRACTION",
        help="EMA half-life as a fraction of the samples seen so far (EDM's ramp-up rule), in (0, 1] "
        "(default 0.05)",
    )
    train.add_argument(
        "--seed", type=Integer(0, 2**63 - 4), default=0, help="the single seed of the run (default 0)"
    )
    train.add_argument("--device", type=Device(), help="where to train, e.g. cpu or cuda (default cpu)")
    train.add_argument(
        "--resume",
        type=InputFile((".safetensors",), "checkpoint"),
        metavar="CHECKPOINT",
        help="continue from DIR/checkpoint.safetensors of the same command",
    )
    train.add_argument(
        "--checkpoint-every",
        type=count,
        default=500,
        metavar="STEPS",
        help="steps between checkpoints (default 500)",
    )
    train.add_argument("--threads", type=count, help="torch CPU threads (default: torch's)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run, check=check)
    return train
