"""``gaussport train-demo``: retrain the digits model of the demo."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import time
from typing import Any

__all__ = ["TRAIN_ON_CPU", "add_parser", "check", "run"]

TRAIN_ON_CPU = (
    "the denoiser trains on --device (cpu by default; the 745k-parameter model trains in minutes "
    "there), the classifier and the Frechet reference points on the CPU."
)


def check(args: argparse.Namespace) -> None:
    """What ``gaussport train-demo`` needs beyond its flags, checked before any work."""
    if importlib.util.find_spec("sklearn") is None:
        raise ValueError("training the digits model needs scikit-learn: pip install 'gaussport[train]'.")


def run(args: argparse.Namespace) -> int:
    from ..digits import train_demo_model

    command = "gaussport " + " ".join(shlex.quote(a) for a in args.argv)
    start = time.perf_counter()
    provenance = train_demo_model(
        args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        classifier_epochs=args.classifier_epochs,
        reference_samples=args.reference_samples,
        held_out_images=args.held_out_images,
        num_threads=args.threads,
        disable=args.quiet or None,
        command=command,
        device=args.device,
    )
    refs = provenance["frechet_reference_points"]
    print(
        f"gaussport train-demo: wrote {args.out} in {time.perf_counter() - start:.0f} s; final loss "
        f"{provenance['denoiser']['final_loss']:.4f}, classifier test accuracy "
        f"{provenance['classifier']['test_accuracy']:.3f}, Frechet of Heun samples {refs['model_heun']:.3g}"
    )
    print(f"use it with: gaussport demo --model {shlex.quote(str(args.out))}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport train-demo`` and its flags."""
    from ..demo._arguments import Device, Directory, Integer

    count = Integer(1)
    train = subparsers.add_parser(
        "train-demo",
        help="retrain the digits model of the demo (about 10-20 min on 2 CPU cores)",
        description="Train the 8x8-digits denoiser (EDM loss, EMA weights), its feature classifier and "
        "the Gaussian statistics of the training split from scikit-learn's digits (pip install "
        "'gaussport[train]'), and write into --out the weights (safetensors), the statistics (npz), the "
        "held-out test split, digits_provenance.json and the model card DIGITS_MODEL.md. The loaders "
        "(gaussport.digits.load_digits_*(directory=DIR)), gaussport.digits.evaluator(directory=DIR) and "
        "`gaussport demo --model DIR` accept the directory. Expected time: 3000 steps take about 10-20 "
        "minutes on 2 CPU cores (the shipped run: 19 min under load). The denoiser trains on --device "
        "(default: the CPU with 2 threads, whose OpenMP wait policy the gaussport command sets to PASSIVE "
        "unless OMP_WAIT_POLICY is set (spinning OpenMP threads ran 5-10x slower under load)). Same seed, "
        "same files (on the CPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--out",
        type=Directory("output"),
        required=True,
        help="output directory (src/gaussport/data regenerates the shipped model)",
    )
    # The run seeds generators with seed, seed + 1 and seed + 2 (gaussport.digits.train).
    train.add_argument("--seed", type=Integer(0, 2**64 - 3), default=0, help="the single seed of the run")
    train.add_argument("--steps", type=count, default=3000, help="denoiser optimiser steps")
    train.add_argument("--batch-size", type=count, default=128, help="denoiser batch size")
    train.add_argument("--classifier-epochs", type=count, default=60, help="classifier training epochs")
    train.add_argument(
        "--reference-samples",
        type=Integer(2),
        default=1000,
        help="samples for the Frechet reference points",
    )
    train.add_argument(
        "--held-out-images",
        type=count,
        metavar="N",
        help="average the held-out losses over the first N images of each split (default: all of them)",
    )
    train.add_argument(
        "--threads", type=count, default=2, help="torch CPU threads during the run (restored afterwards)"
    )
    train.add_argument(
        "--device",
        type=Device(),
        help="where the denoiser trains, e.g. cpu or cuda (default cpu); the classifier and the Frechet "
        "reference points run on the CPU",
    )
    train.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=run, check=check)
    return train
