"""Train the digits model into a directory, as shipped: weights, statistics, test split, Frechet
reference points, provenance and model card (``gaussport train-demo``, ``benchmarks/train_demo.py``).

Training itself is :func:`gaussport.digits.train.train_digits`; this module adds what a release of
the model records next to the weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import grids
from .._files import atomic_writer
from ..metrics import feature_statistics, frechet_distance
from ..sampling import solve
from .files import (
    load_digits_classifier,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_test_set,
    pixels_to_model,
)
from .frechet import digits_features
from .train import load_sklearn_digits, stratified_split, train_digits

__all__ = ["train_demo_model"]

logger = logging.getLogger("gaussport")


def train_demo_model(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int = 3000,
    batch_size: int = 128,
    classifier_epochs: int = 60,
    reference_samples: int = 1000,
    held_out_images: int | None = None,
    num_threads: int | None = 2,
    disable: bool | None = None,
    command: str | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Train the digits model into ``out``: weights, statistics, test split, provenance and model card.

    Runs :func:`gaussport.digits.train.train_digits` (needs scikit-learn: ``pip install
    'gaussport[train]'``), then measures Frechet-distance reference points (training split, samples
    of the fitted Gaussian, ``reference_samples`` model samples with Heun at NFE 35) and writes
    ``digits_provenance.json`` and ``DIGITS_MODEL.md``. The loaders, :func:`gaussport.digits.evaluator`
    and ``gaussport demo --model`` accept ``out`` as ``directory=``. ``out = src/gaussport/data``
    regenerates the shipped files. Training runs on the CPU (the model is small): 3000 steps take
    about 10-20 minutes on 2 CPU cores.

    Args:
        out: the output directory (created if needed).
        seed: the single seed of the run.
        steps: denoiser optimiser steps.
        batch_size: denoiser batch size.
        classifier_epochs: classifier training epochs.
        reference_samples: model and Gaussian samples for the Frechet reference points (at least 2).
        held_out_images: the held-out losses use the first this many images of each split
            (default: every image; see :func:`gaussport.digits.train.train_digits`).
        num_threads: ``torch.set_num_threads`` during the run (restored afterwards).
        disable: hides the progress bars.
        command: the command line recorded in the provenance.
        device: where the denoiser trains (default: the CPU); e.g. ``"cuda"``. The classifier and
            the Frechet reference points run on the CPU.

    Returns:
        The provenance record (also in ``out/digits_provenance.json``).
    """
    if reference_samples < 2:
        raise ValueError(f"reference_samples must be at least 2; got {reference_samples}.")
    out_dir = Path(out)
    provenance = train_digits(
        out_dir,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        classifier_epochs=classifier_epochs,
        held_out_images=held_out_images,
        num_threads=num_threads,
        disable=disable,
        command=command,
        device=device,
    )
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        refs = _frechet_reference_points(out_dir, seed, n=reference_samples)
    finally:
        torch.set_num_threads(previous)
    provenance["frechet_reference_points"] = refs
    provenance_text = json.dumps(provenance, indent=2)  # encoded before any file is touched
    card = _model_card(provenance, refs)
    with atomic_writer(out_dir / "digits_provenance.json", "w") as f:
        f.write(provenance_text)
    with atomic_writer(out_dir / "DIGITS_MODEL.md", "w") as f:
        f.write(card)
    logger.info(
        "wrote %s (wall %.0f s); Frechet: train %.3f, gaussian %.3f, model %.3f",
        out_dir,
        provenance["wall_seconds"],
        refs["train_split"],
        refs["gaussian_samples"],
        refs["model_heun"],
    )
    return provenance


def _frechet_reference_points(out: Path, seed: int, n: int = 1000, num_steps: int = 18) -> dict[str, float]:
    """Frechet distances to the test split: training split, Gaussian samples, model samples (Heun)."""
    clf = load_digits_classifier(directory=out)
    test = feature_statistics(digits_features(load_digits_test_set(directory=out).images, clf))
    pixels, labels = load_sklearn_digits()
    train_idx, _ = stratified_split(labels, 0.2, seed)
    x_train = pixels_to_model(pixels[train_idx]).unsqueeze(1)
    gaussian = load_digits_gaussian(directory=out)
    net = load_digits_denoiser(directory=out)
    gen = torch.Generator().manual_seed(10_000 + seed)
    noise = torch.randn(n, 1, 8, 8, generator=gen)
    sigmas = grids.karras(num_steps, 0.002, 80.0)
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = solve(net, 80.0 * noise, sigmas, "heun", disable=True).x
    seconds = time.perf_counter() - t0
    return {
        "train_split": frechet_distance(digits_features(x_train, clf), test),
        "gaussian_samples": frechet_distance(digits_features(gaussian.sample(n, generator=gen), clf), test),
        "model_heun": frechet_distance(digits_features(samples, clf), test),
        "model_heun_nfe": 2 * num_steps - 1,
        "model_heun_seconds": seconds,
        "n_samples": n,
    }


def _model_card(p: dict[str, Any], refs: dict[str, Any]) -> str:
    d, c, data = p["denoiser"], p["classifier"], p["data"]
    net = d["network"]
    load = {"min": math.nan, "mean": math.nan, "max": math.nan, **(d["load_average_1min"] or {})}
    cfg = d["config"]
    files = [
        (
            "digits_denoiser.safetensors",
            "EMA weights of `DigitsUNet` (EDM-preconditioned, class-conditional with a null label), float32",
        ),
        (
            "digits_classifier.safetensors",
            f"`DigitsClassifier` (tiny CNN; its {c['feature_dim']}-dim penultimate features feed the Frechet "
            "distance)",
        ),
        (
            "digits_gaussian.npz",
            "`Gaussian.fit` of the training split in [-1, 1] (dense, float64, N - 1), sample shape (1, 8, 8)",
        ),
        (
            "digits_class_gaussians.npz",
            "`GaussianMixture` of the 10 class Gaussians (component k = digit k), "
            "weights = class frequencies",
        ),
        ("digits_test.npz", "held-out test split: uint8 pixels 0..16, labels, indices into `load_digits()`"),
        ("digits_provenance.json", "machine-readable record of this run (all numbers below, the loss curve)"),
    ]
    table = "\n".join(f"| `{name}` | {text} |" for name, text in files)
    minutes = p["wall_seconds"] / 60
    held = d.get("held_out_images")
    subset = "" if held is None else f" (the first {held} images of each split)"
    return f"""# The shipped 8x8-digits model

Files in this directory (`gaussport/data/` for the shipped model), all written by one run of
`gaussport train-demo` or `benchmarks/train_demo.py` (the same code: `gaussport.digits.train_demo_model`,
which calls `gaussport.digits.train.train_digits`); loaded with
`gaussport.digits.load_digits_*` (safetensors and `np.load(allow_pickle=False)`; nothing is unpickled).

| File | Contents |
|---|---|
{table}

## Command and run

- Command: `{p["command"]}`
- Seed: {p["seed"]} (split, initial weights, batches, noise levels, noise, label dropout, dropout)
- Machine: {p["machine"]}
- Wall time (whole run: data, fits, classifier, denoiser, files): {p["wall_seconds"]:.0f} s
  ({minutes:.1f} min); denoiser training {d["train_seconds"]:.0f} s
  ({d["seconds_per_step"] * 1000:.0f} ms/step)
- 1-minute load average during denoiser training (sampled every 100 steps): min {load["min"]:.2f},
  mean {load["mean"]:.2f}, max {load["max"]:.2f} (the machine's cores were shared with other jobs; the
  script sets `OMP_WAIT_POLICY=PASSIVE`, without which 2 OpenMP threads ran 5-10x slower under such load)

## Data

Alpaydin, E. and Kaynak, C. (1998). *Optical Recognition of Handwritten Digits* [data set]. UCI
Machine Learning Repository, https://doi.org/10.24432/C50P49
(https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits). Licensed under
Creative Commons Attribution 4.0 International (CC BY 4.0). Used as distributed by scikit-learn
(`sklearn.datasets.load_digits`, a copy of the UCI test set: 1,797 images). The test split shipped
here (`digits_test.npz`) is a subset of that data set, redistributed under CC BY 4.0 with this
attribution; the statistics and weights are derived from it.

- {data["n_images"]} images of 8x8 pixels, values 0..16, scaled to [-1, 1] as `x = pixels / 8 - 1`.
- Split: {data["rule"]}; seed {data["seed"]}: {data["n_train"]} training and {data["n_test"]} test images.
- The test split is used only for reported numbers (accuracy, held-out loss, Frechet distances).

## Denoiser

- `DigitsUNet`: {d["parameters"]:,} parameters; model channels {net["model_channels"]} (8x8) and
  {net["model_channels"] * net["channel_mult"]} (4x4), {net["num_blocks"]} residual blocks per encoder
  level, self-attention at 4x4 ({net["attention_heads"]} heads), embedding width {net["emb_dim"]},
  dropout {net["dropout"]}; EDM preconditioning with sigma_data = {net["sigma_data"]}, sigma range
  [{net["sigma_min"]}, {net["sigma_max"]}].
- Loss: EDM (ln sigma ~ N({cfg["p_mean"]}, {cfg["p_std"]}^2), weight
  (sigma^2 + sigma_data^2) / (sigma sigma_data)^2).
- Optimiser: Adam, peak lr {cfg["lr"]}, {cfg["warmup_steps"]} warm-up steps, cosine decay to
  {cfg["final_lr_fraction"]} x peak; batch {cfg["batch_size"]}; {cfg["steps"]} steps
  ({cfg["steps"] * cfg["batch_size"] / data["n_train"]:.0f} epochs); label dropout {cfg["label_dropout"]};
  EMA half-life {cfg["ema_fraction"]} x images seen (shipped weights = EMA).
- Final training loss (mean of the last 10% of steps, per pixel; training batches, dropout on,
  {100 * (1 - cfg["label_dropout"]):.0f}% of them with labels): {d["final_loss"]:.4f}.
- EMA model, EDM loss averaged over 8 fixed noise draws{subset}: test split {d["held_out_loss"]:.4f}
  (unconditional), {d["held_out_loss_conditional"]:.4f} (with labels); training split
  {d["train_split_loss"]:.4f} (unconditional).

## Classifier and Frechet distance

- `DigitsClassifier`: {c["parameters"]:,} parameters, {c["epochs"]} epochs AdamW;
  test accuracy **{c["test_accuracy"] * 100:.2f}%** (training accuracy {c["train_accuracy"] * 100:.2f}%).
- Frechet distance of classifier features to the test split (`gaussport.digits.digits_frechet_distance`;
  an FID analogue on this classifier, comparable only with itself):
  - training split ({data["n_train"]} images): {refs["train_split"]:.3f} (the floor: real data vs real data)
  - {refs["n_samples"]} samples of the fitted Gaussian: {refs["gaussian_samples"]:.3f}
  - {refs["n_samples"]} unconditional model samples, Heun on an 18-level Karras grid from sigma = 80
    (NFE {refs["model_heun_nfe"]}): {refs["model_heun"]:.3f}

## Licence of the model

The network code and weights are gaussport's own (MIT, like the package); no third-party code or
weights were used. The training data are CC BY 4.0 (attribution above).
"""
