"""``gaussport fit``: the warm-start Gaussian of a data set, written as a statistics file."""

from __future__ import annotations

import argparse
import inspect
import os
import time
from typing import Any

__all__ = ["REPRESENTATIONS", "STATS_SUFFIXES", "add_parser", "check", "run"]

REPRESENTATIONS = ("dense", "diagonal", "lowrank", "auto")
STATS_SUFFIXES = (".safetensors", ".npz")


def check(args: argparse.Namespace) -> None:
    """The flags together, and the data's contents (image sizes, arrays), before any work."""
    from ..analytic import Gaussian

    if args.rank is not None and args.representation in ("dense", "diagonal"):
        raise ValueError(
            f"--rank applies to a low-rank fit; drop it, or pass --representation lowrank (or auto) with it "
            f"instead of {args.representation}."
        )
    if args.representation == "lowrank" and args.rank is None:
        raise ValueError("--representation lowrank needs --rank R, the number of eigenpairs to keep.")
    if args.device is not None and "device" not in inspect.signature(Gaussian.fit).parameters:
        raise ValueError("--device: this gaussport fits on the CPU only; drop --device.")
    args.source_batches = _source(args)  # reads image headers / array headers: no pixel decoded


def _source(args: argparse.Namespace) -> Any:
    from ..analytic.sources import as_batches

    return as_batches(
        args.data,
        batch_size=args.batch_size,
        scale=args.scale,
        flip=args.flip,
        limit=args.limit,
        disable=args.quiet or None,
    )


def _fit_options(args: argparse.Namespace, description: str) -> dict[str, Any]:
    representation = args.representation or ("lowrank" if args.rank is not None else None)
    options: dict[str, Any] = {"source": description}
    if representation is not None:
        options["representation"] = representation
    if args.rank is not None:
        options["rank"] = args.rank
    if args.device is not None:
        options["device"] = args.device
    return options


def run(args: argparse.Namespace) -> int:
    from ..analytic import Gaussian

    batches = args.source_batches
    scale = {"uint8_to_pm1": "[-1, 1]", "uint8_to_01": "[0, 1]"}.get(batches.scale, "as stored")
    description = f"gaussport fit {batches.description}" + (", horizontal flips" if args.flip else "")
    start = time.perf_counter()
    gaussian = Gaussian.fit(batches, scale=scale, **_fit_options(args, description))
    seconds = time.perf_counter() - start
    os.makedirs(args.out.parent, exist_ok=True)
    gaussian.save(args.out)
    rank = getattr(gaussian.cov, "rank", None)
    print(
        f"gaussport fit: {gaussian.n_samples} samples of shape {list(gaussian.shape)} (d = {gaussian.dim}), "
        f"{gaussian.representation}{f' rank {rank}' if rank is not None else ''}, values {scale}, "
        f"in {seconds:.1f} s; wrote {args.out}"
    )
    print(f"see it with: gaussport info {args.out}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport fit`` and its flags, each declaring what it accepts (its type or choices)."""
    from ..analytic.sources import SCALES
    from ..demo._arguments import DataPath, Device, Integer, OutputFile

    fit = subparsers.add_parser(
        "fit",
        help="fit the warm-start Gaussian to a folder of images or a .npy/.npz file",
        description="Fit the Gaussian (mean and covariance, float64, streamed in batches) of DATA -- a "
        "folder of PNG/JPEG images (sorted by name, all the same size; grey or RGB) or a .npy/.npz file "
        "holding one array [N, *sample_shape] -- and write it to -o (a .safetensors or .npz statistics "
        "file that Gaussian.load, the warm_start= argument of gaussport.solve and `gaussport info` "
        "read). Images are scaled to [-1, 1] by default (--scale); --flip adds the mirror image of "
        "every sample (EDM's augmentation: N doubles). --representation dense keeps the full "
        "covariance (d x d: memory about 3 d^2 float64 while fitting), diagonal the variances, lowrank "
        "the top --rank eigenpairs plus one residual variance; auto chooses by d. Every argument is "
        "checked (image sizes included) before the fit starts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", type=DataPath(), metavar="DATA", help="a folder of images, or a .npy/.npz file")
    fit.add_argument(
        "-o",
        "--out",
        type=OutputFile(STATS_SUFFIXES, "statistics"),
        required=True,
        metavar="FILE",
        help="the statistics file to write (.safetensors, or .npz); replaced atomically if it exists",
    )
    fit.add_argument(
        "--representation",
        choices=REPRESENTATIONS,
        help="dense, diagonal, lowrank (needs --rank) or auto; default: lowrank with --rank, else the "
        "library's default (Gaussian.fit)",
    )
    fit.add_argument("--rank", type=Integer(1), metavar="R", help="eigenpairs a low-rank fit keeps")
    fit.add_argument(
        "--scale",
        choices=SCALES,
        help="value scaling: uint8_to_pm1 (x / 127.5 - 1: the default for images), uint8_to_01 (x / 255), "
        "none (the values as stored: the default for arrays)",
    )
    fit.add_argument("--flip", action="store_true", help="add horizontal mirror images (doubles N)")
    fit.add_argument("--limit", type=Integer(1), metavar="N", help="use the first N samples (before --flip)")
    fit.add_argument(
        "--batch-size", type=Integer(1), default=256, metavar="B", help="samples read per batch (default 256)"
    )
    fit.add_argument("--device", type=Device(), help="where the fit computes, e.g. cpu or cuda (default cpu)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(func=run, check=check)
    return fit
