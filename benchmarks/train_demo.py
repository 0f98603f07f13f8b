"""Train gaussport's shipped 8x8-digits model and write its package data and model card.

Usage (regenerates the shipped files; < 30 min on 2 CPU cores):

    python benchmarks/train_demo.py --out src/gaussport/data

Writes the files listed in ``gaussport.models.train`` plus ``DIGITS_MODEL.md``, whose numbers
(losses, accuracy, wall time, load average, Frechet-distance reference points) come from this run.
"""

from __future__ import annotations

import os

# The machine's cores are shared: spinning OpenMP workers stall each other under contention
# (measured 5-10x slower steps at load ~3 on 2 cores). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import gaussport  # noqa: E402
from gaussport.metrics import digits_features, feature_statistics, frechet_distance  # noqa: E402
from gaussport.models import (  # noqa: E402
    load_digits_classifier,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_test_set,
    pixels_to_model,
)
from gaussport.models.train import load_sklearn_digits, stratified_split, train_digits  # noqa: E402


def reference_points(out: Path, seed: int, n: int = 1000, num_steps: int = 18) -> dict[str, float]:
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
    sigmas = gaussport.grids.karras(num_steps, 0.002, 80.0)
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = gaussport.solve(net, 80.0 * noise, sigmas, "heun", disable=True).x
    seconds = time.perf_counter() - t0
    return {
        "train_split": frechet_distance(digits_features(x_train, clf), test),
        "gaussian_samples": frechet_distance(digits_features(gaussian.sample(n, generator=gen), clf), test),
        "model_heun": frechet_distance(digits_features(samples, clf), test),
        "model_heun_nfe": 2 * num_steps - 1,
        "model_heun_seconds": seconds,
        "n_samples": n,
    }


def model_card(p: dict, refs: dict) -> str:
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
    return f"""# The shipped 8x8-digits model

Files in this directory (`gaussport/data/`), all written by one run of
`benchmarks/train_demo.py` (`gaussport.models.train.train_digits`); loaded with
`gaussport.models.load_digits_*` (safetensors and `np.load(allow_pickle=False)`; nothing is unpickled).

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
- EMA model, EDM loss averaged over 8 fixed noise draws: test split {d["held_out_loss"]:.4f}
  (unconditional), {d["held_out_loss_conditional"]:.4f} (with labels); training split
  {d["train_split_loss"]:.4f} (unconditional).

## Classifier and Frechet distance

- `DigitsClassifier`: {c["parameters"]:,} parameters, {c["epochs"]} epochs AdamW;
  test accuracy **{c["test_accuracy"] * 100:.2f}%** (training accuracy {c["train_accuracy"] * 100:.2f}%).
- Frechet distance of classifier features to the test split (`gaussport.metrics.digits_frechet_distance`;
  an FID analogue on this classifier, comparable only with itself):
  - training split ({data["n_train"]} images): {refs["train_split"]:.3f} (the floor: real data vs real data)
  - {refs["n_samples"]} samples of the fitted Gaussian: {refs["gaussian_samples"]:.3f}
  - {refs["n_samples"]} unconditional model samples, Heun on an 18-level Karras grid from sigma = 80
    (NFE {refs["model_heun_nfe"]}): {refs["model_heun"]:.3f}

## Licence of the model

The network code and weights are gaussport's own (MIT, like the package); no third-party code or
weights were used. The training data are CC BY 4.0 (attribution above).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (src/gaussport/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000, help="denoiser optimiser steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--classifier-epochs", type=int, default=60)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    words = ["benchmarks/train_demo.py", *(argv if argv is not None else sys.argv[1:])]
    command = "python " + " ".join(shlex.quote(a) for a in words)
    provenance = train_digits(
        args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        classifier_epochs=args.classifier_epochs,
        disable=True if args.no_progress else None,
        command=command,
    )
    torch.set_num_threads(2)
    refs = reference_points(args.out, args.seed)
    provenance["frechet_reference_points"] = refs
    with open(args.out / "digits_provenance.json", "w") as f:
        json.dump(provenance, f, indent=2)
    (args.out / "DIGITS_MODEL.md").write_text(model_card(provenance, refs))
    logging.info(
        "wrote %s (wall %.0f s); Frechet: train %.3f, gaussian %.3f, model %.3f",
        args.out,
        provenance["wall_seconds"],
        refs["train_split"],
        refs["gaussian_samples"],
        refs["model_heun"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
