"""Training of the shipped digits model: EDM denoiser, feature classifier, Gaussian statistics.

:func:`train_digits` does everything the package data need, from scikit-learn's 8x8 digits
(``sklearn.datasets.load_digits``; install the ``train`` extra), and writes into ``out_dir``:

* ``digits_denoiser.safetensors`` -- the EMA weights of a :class:`~gaussport.digits.unet.DigitsUNet`
  trained with the EDM loss (Karras et al. 2022, §5 and Table 1): ``ln sigma ~ N(-1.2, 1.2^2)``,
  weight ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, Adam with a linear learning-rate
  warm-up then a cosine decay, an exponential moving average (EMA) of the weights whose half-life
  is a fixed fraction of the images seen so far (EDM's ``ema_rampup_ratio`` rule), and label dropout
  (a fraction of labels replaced by the null label, Ho & Salimans 2022) so the same weights are an
  unconditional and a class-conditional model;
* ``digits_classifier.safetensors`` -- a :class:`~gaussport.digits.classifier.DigitsClassifier`;
* ``digits_gaussian.npz`` -- :meth:`Gaussian.fit` of the training split (dense, float64, ``N - 1``);
* ``digits_class_gaussians.npz`` -- one Gaussian per digit and the class frequencies, a
  :class:`~gaussport.analytic.GaussianMixture`;
* ``digits_test.npz`` -- the held-out test split (uint8 pixels 0..16, labels, indices);
* ``digits_provenance.json`` and ``DIGITS_MODEL.md`` -- what was done, with which numbers.

Randomness: every draw (weight initialisation, split, batches, noise levels, noise, label dropout)
comes from explicit ``torch.Generator`` objects derived from ``seed``. ``nn.Dropout`` can only use
the global RNG, so training runs inside ``torch.random.fork_rng`` with the global RNG seeded from
``seed``: the run is reproducible and the caller's global RNG state is restored afterwards.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import as_int
from .._files import atomic_writer
from ..analytic import Gaussian, GaussianMixture
from ..training.trainer import TrainerConfig
from . import files
from .classifier import DigitsClassifier
from .unet import SIGMA_DATA, DigitsUNet

__all__ = [
    "DenoiserConfig",
    "load_sklearn_digits",
    "stratified_split",
    "edm_loss",
    "held_out_loss",
    "residual_digits_denoiser",
    "trainer_config",
    "train_denoiser",
    "train_classifier",
    "train_digits",
]

logger = logging.getLogger("gaussport")

SEED_MAX = 2**64 - 3  # torch generators take seeds below 2**64; a run uses seed, seed + 1 and seed + 2
DATA_SOURCE = (
    "UCI ML 'Optical Recognition of Handwritten Digits' (Alpaydin & Kaynak, 1998; "
    "https://doi.org/10.24432/C50P49) as distributed by scikit-learn (sklearn.datasets.load_digits), "
    "CC BY 4.0"
)


# ---------------------------------------------------------------------- data
def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``(pixels [1797, 8, 8] uint8 in 0..16, labels [1797] int64)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "training the digits model needs scikit-learn: pip install 'gaussport[train]'"
        ) from exc
    bunch = load_digits()
    pixels = np.asarray(bunch.images)
    if pixels.min() < 0 or pixels.max() > files.PIXEL_MAX or not np.all(pixels == np.round(pixels)):
        raise ValueError("unexpected digits data: pixel values must be integers in 0..16.")
    return pixels.astype(np.uint8), np.asarray(bunch.target, dtype=np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_indices, test_indices)``: per class, ``round(test_fraction * n_class)`` images
    chosen by a random permutation from ``torch.Generator().manual_seed(seed)`` go to the test split."""
    gen = torch.Generator().manual_seed(seed)
    test: list[int] = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        perm = torch.randperm(len(members), generator=gen).numpy()
        test.extend(members[perm[: int(round(test_fraction * len(members)))]].tolist())
    test_idx = np.sort(np.asarray(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


# ---------------------------------------------------------------------- denoiser
@dataclass(frozen=True)
class DenoiserConfig:
    """Hyper-parameters of the denoiser training (defaults: the shipped model).

    Attributes:
        steps: optimiser steps.
        batch_size: images per step (batches are drawn epoch by epoch, without replacement).
        lr: peak Adam learning rate (betas 0.9, 0.999, eps 1e-8, as EDM).
        warmup_steps: linear learning-rate warm-up from 0.
        final_lr_fraction: the cosine decay after warm-up ends at ``lr * final_lr_fraction``.
        p_mean: mean of EDM's noise-level distribution ``ln sigma ~ N(p_mean, p_std^2)``.
        p_std: its standard deviation.
        label_dropout: probability that a training label is replaced by the null label.
        ema_fraction: EMA half-life as a fraction of the images seen so far (EDM's ramp-up rule
            ``halflife = ema_rampup_ratio * images_seen``, Karras et al. 2022, App. F.3).
        network: keyword arguments of :class:`DigitsUNet`.
    """

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.1
    p_mean: float = -1.2
    p_std: float = 1.2
    label_dropout: float = 0.15
    ema_fraction: float = 0.05
    network: dict[str, Any] = field(default_factory=dict)


def edm_loss(
    net: nn.Module,
    x0: Tensor,
    labels: Tensor | None,
    generator: torch.Generator,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = SIGMA_DATA,
) -> Tensor:
    """EDM's denoising loss per element, ``[B, C, H, W]`` (Karras et al. 2022, eq. 8 and Table 1).

    ``sigma = exp(p_mean + p_std n)``, ``x = x0 + sigma eps``, loss
    ``lambda(sigma) (D(x, sigma) - x0)^2`` with ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``,
    which makes the loss the unit-weighted error of the raw network output.
    """
    b = x0.shape[0]
    n = torch.randn(b, generator=generator, dtype=x0.dtype)
    sigma = torch.exp(p_mean + p_std * n)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    weight = ((sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2).reshape(-1, 1, 1, 1)
    denoised = net(x0 + sigma.reshape(-1, 1, 1, 1) * eps, sigma, class_labels=labels)
    return weight * (denoised - x0) ** 2


def _lr_at(step: int, cfg: DenoiserConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * final_lr_fraction`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.final_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless mini-batch indices: a fresh permutation per epoch, batches never straddle epochs' ends
    (the last incomplete batch of an epoch is dropped)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start : start + batch_size]


@torch.no_grad()
def held_out_loss(
    net: nn.Module,
    x0: Tensor,
    labels: Tensor | None,
    *,
    seed: int = 1234,
    repeats: int = 8,
    cfg: DenoiserConfig | None = None,
) -> float:
    """The EDM loss of ``net`` on ``x0`` averaged over ``repeats`` fixed draws of noise level and noise."""
    cfg = cfg or DenoiserConfig()
    was_training = net.training
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(repeats):
        total += float(edm_loss(net, x0, labels, gen, p_mean=cfg.p_mean, p_std=cfg.p_std).mean())
    net.train(was_training)
    return total / repeats


class _RawUNet(nn.Module):
    """The raw network ``F(x_in, c_noise, class_labels=None)`` of a :class:`DigitsUNet` (no preconditioning):
    the ``network`` of a :class:`gaussport.training.GaussianResidualDenoiser`."""

    def __init__(self, unet: DigitsUNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_in: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        unet = self.unet
        dtype = unet.dtype
        labels = None
        if unet.label_dim:
            labels = unet.one_hot(class_labels, x_in.shape[0], x_in.device, dtype)
        return unet.raw(x_in.to(dtype), c_noise.reshape(-1).to(dtype), labels).to(x_in.dtype)


def residual_digits_denoiser(unet: DigitsUNet, gaussian: Gaussian) -> nn.Module:
    """The Gaussian-residual denoiser ``D = D_G + c_out F`` whose ``F`` is ``unet``'s raw output.

    ``unet``'s own EDM preconditioning is bypassed (its :meth:`DigitsUNet.raw` is the ``F``); with its
    zero-initialised output layer the untrained model is exactly the Gaussian denoiser of ``gaussian``.
    The EMA weights of such a model are ``model.network.unet``'s state dict.
    """
    from ..training import GaussianResidualDenoiser

    return GaussianResidualDenoiser(_RawUNet(unet), gaussian)


def _digits_loss(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    generator: torch.Generator,
    *,
    cfg: DenoiserConfig,
    weighting: str,
) -> Tensor:
    """EDM loss of a batch ``(images, one-hot labels)`` after label dropout (drawn from ``generator``)."""
    from ..training import edm_loss as training_edm_loss

    x0, one_hot = batch
    # Drawn on the generator's device (the CPU in the recipe), so a run draws the same on any device.
    draw = torch.rand(x0.shape[0], generator=generator, device=generator.device)
    keep = (draw >= cfg.label_dropout).to(device=x0.device, dtype=one_hot.dtype)
    return training_edm_loss(
        model,
        x0,
        generator=generator,
        p_mean=cfg.p_mean,
        p_std=cfg.p_std,
        sigma_data=SIGMA_DATA,
        weighting=weighting,
        class_labels=one_hot * keep[:, None],
    )


def trainer_config(
    cfg: DenoiserConfig,
    seed: int,
    *,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
) -> TrainerConfig:
    """The :class:`~gaussport.training.TrainerConfig` of the recipe: ``cfg``'s optimiser and EMA
    settings; one generator (``seed + 1``) draws batches, label dropout, noise levels and noise, the
    global RNG (dropout) is seeded with ``seed + 2`` (the shipped run's streams)."""
    return TrainerConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay="cosine",
        final_lr_fraction=cfg.final_lr_fraction,
        ema_fraction=cfg.ema_fraction,
        batch_seed=seed + 1,
        noise_seed=None,
        global_seed=seed + 2,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        grad_nan_to_num=True,
    )


def train_denoiser(
    x: Tensor,
    labels: Tensor,
    *,
    seed: int = 0,
    config: DenoiserConfig | None = None,
    disable: bool | None = None,
    gaussian: Gaussian | None = None,
    device: torch.device | str | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a :class:`DigitsUNet` with the EDM loss (:class:`gaussport.training.Trainer`); return its
    EMA copy and a training record.

    Args:
        x: training images ``[N, 1, 8, 8]`` in [-1, 1].
        labels: integer labels ``[N]``.
        seed: seeds the initial weights (``seed``), the batches, noise levels, noise and label
            dropout (``seed + 1``) and the global RNG inside the run for ``nn.Dropout`` (``seed + 2``).
        config: hyper-parameters (:class:`DenoiserConfig`).
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).
        gaussian: train the Gaussian-residual form ``D = D_G + c_out F`` (:func:`residual_digits_denoiser`,
            loss weight ``1 / c_out^2``: F's error unit-weighted, as EDM's weighting does for its
            ``c_out``) instead of EDM's preconditioning; ``None``: the shipped recipe.
        device: where to train (default: the CPU).
        evaluate: a hook ``evaluate(ema_model, step) -> {name: float}``
            (see :class:`~gaussport.training.Trainer`).
        eval_every: steps between evaluations (``None``: after the last step only).
        checkpoint_dir: write ``checkpoint.safetensors`` here every ``checkpoint_every`` steps.
        checkpoint_every: steps between checkpoints.
        resume: a checkpoint of the same run to continue from (the result is bitwise that of an
            uninterrupted run on the CPU).

    Returns:
        ``(ema_model, record)``: a :class:`DigitsUNet`, or with ``gaussian`` the residual denoiser;
        ``record`` holds the loss curve (mean loss per 100 steps), the final training loss (mean of the
        last 10% of steps), evaluations, step time and the load average during training.
    """
    from ..training import Trainer

    cfg = config or DenoiserConfig()
    unet = DigitsUNet(generator=torch.Generator().manual_seed(seed), **cfg.network)
    model: nn.Module = unet if gaussian is None else residual_digits_denoiser(unet, gaussian)
    one_hot = F.one_hot(labels.long(), unet.label_dim).to(torch.float32)
    weighting = "edm" if gaussian is None else "denoiser"
    trainer = Trainer(
        model,
        functools.partial(_digits_loss, cfg=cfg, weighting=weighting),
        (x, one_hot),
        config=trainer_config(cfg, seed, eval_every=eval_every, checkpoint_every=checkpoint_every),
        device=device if device is not None else "cpu",
        evaluate=evaluate,
        checkpoint_dir=checkpoint_dir,
        disable=disable,
    )
    if resume is not None:
        trainer.load(resume)
    record = trainer.train()
    record["trainer_config"] = record.pop("config")  # "config" is the DenoiserConfig in the provenance
    record["steps"] = cfg.steps
    record["residual"] = gaussian is not None
    return trainer.ema, record


# ---------------------------------------------------------------------- classifier
def train_classifier(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    seed: int = 0,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    disable: bool | None = None,
) -> tuple[DigitsClassifier, dict[str, Any]]:
    """Train a :class:`DigitsClassifier` with cross-entropy and AdamW (cosine learning rate).

    The test split is only used to report the accuracy at the end. Returns ``(classifier, record)``.
    """
    clf = DigitsClassifier(generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = x_train.shape[0] // batch_size
    total = epochs * steps_per_epoch
    batches = _batches(x_train.shape[0], batch_size, gen)
    start = time.perf_counter()
    clf.train()
    for step in tqdm(range(total), disable=disable, desc="train classifier", unit="step"):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
        idx = next(batches)
        loss = F.cross_entropy(clf(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    clf.eval().requires_grad_(False)
    with torch.no_grad():
        train_acc = float((clf(x_train).argmax(1) == y_train).float().mean())
        test_acc = float((clf(x_test).argmax(1) == y_test).float().mean())
    record = {
        "epochs": epochs,
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "train_seconds": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in clf.parameters()),
        "feature_dim": clf.feature_dim,
    }
    return clf, record


# ---------------------------------------------------------------------- everything
def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {threads} threads"


def train_digits(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int = 3000,
    batch_size: int = 128,
    test_fraction: float = 0.2,
    classifier_epochs: int = 60,
    held_out_images: int | None = None,
    num_threads: int | None = 2,
    disable: bool | None = None,
    command: str | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Train and write every file of the shipped digits model into ``out_dir`` (see module docstring).

    Args:
        out_dir: output directory (created if needed); ``src/gaussport/data`` regenerates the shipped files.
        seed: the single seed of the run (split, weights, batches, noise).
        steps: denoiser optimiser steps.
        batch_size: denoiser batch size.
        test_fraction: fraction of each class held out as the test split.
        classifier_epochs: classifier training epochs.
        held_out_images: the denoiser's held-out losses (test split, with and without labels, and
            training split) average over the first this many images of each split; ``None`` (the
            recipe) over every image. A small number keeps test runs of the pipeline short.
        num_threads: ``torch.set_num_threads`` for the run (restored afterwards); ``None`` leaves it.
        disable: disables the progress bars.
        command: the command line to record in the provenance (e.g. from ``benchmarks/train_demo.py``).
        device: where the denoiser trains (default: the CPU); the classifier trains on the CPU.

    Returns:
        The provenance record (also written to ``digits_provenance.json`` and ``DIGITS_MODEL.md``).

    Raises:
        TypeError: a count or seed that is not an integer (a bool or a float included).
        ValueError: a count below 1, a seed outside [0, 2**64 - 3], a ``test_fraction`` outside (0, 1).
    """
    # Every argument is checked before the data is loaded or anything is written.
    seed = as_int(seed, "seed", minimum=0)
    if seed > SEED_MAX:
        raise ValueError(f"seed must be at most 2**64 - 3 (the run also uses seed + 1 and + 2); got {seed}.")
    counts = {"steps": steps, "batch_size": batch_size, "classifier_epochs": classifier_epochs}
    for name, count in counts.items():
        as_int(count, name, minimum=1)
    as_int(held_out_images, "held_out_images", minimum=1, allow_none=True)
    as_int(num_threads, "num_threads", minimum=1, allow_none=True)
    fraction_ok = isinstance(test_fraction, (int, float)) and not isinstance(test_fraction, bool)
    if not (fraction_ok and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number in (0, 1), e.g. 0.2; got {test_fraction!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        t0 = time.perf_counter()
        pixels, labels = load_sklearn_digits()
        train_idx, test_idx = stratified_split(labels, test_fraction, seed)
        x = files.pixels_to_model(pixels).unsqueeze(1)
        y = torch.from_numpy(labels)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        logger.info("digits: %d training and %d test images", len(train_idx), len(test_idx))

        source = f"sklearn digits, training split ({len(train_idx)} of {len(labels)} images, seed {seed})"
        with warnings.catch_warnings():
            # Pixels that are 0 in every training image give zero eigenvalues, estimated as +-1e-17.
            warnings.filterwarnings("ignore", message="clamped .* slightly negative eigenvalue")
            gaussian = Gaussian.fit(x_train, scale="[-1, 1]", source=source)
            classes = [
                Gaussian.fit(x_train[y_train == k], scale="[-1, 1]", source=f"{source}, digit {k}")
                for k in range(10)
            ]
        gaussian.save(out / files.GAUSSIAN_FILE)
        counts = torch.bincount(y_train, minlength=10).to(torch.float64)
        GaussianMixture(classes, counts / counts.sum()).save(out / files.CLASS_GAUSSIANS_FILE)
        split_meta = {
            "seed": seed,
            "test_fraction": test_fraction,
            "rule": ("per class, round(test_fraction * n) images by torch.randperm (stratified_split)"),
            "scale": "x = pixels / 8 - 1",
            "source": DATA_SOURCE,
        }
        files.save_test_set(
            out / files.TEST_SET_FILE, pixels[test_idx], labels[test_idx], test_idx, split_meta
        )

        clf, clf_record = train_classifier(
            x_train, y_train, x_test, y_test, seed=seed, epochs=classifier_epochs, disable=disable
        )
        files.save_network(clf, out / files.CLASSIFIER_FILE, files.CLASSIFIER_FORMAT, extra=clf_record)
        logger.info("classifier test accuracy %.4f", clf_record["test_accuracy"])

        cfg = DenoiserConfig(steps=steps, batch_size=batch_size)
        ema, record = train_denoiser(x_train, y_train, seed=seed, config=cfg, disable=disable, device=device)
        ema = ema.to("cpu")
        held = slice(held_out_images)  # slice(None): every image
        record["held_out_images"] = held_out_images
        record["held_out_loss"] = held_out_loss(ema, x_test[held], None, cfg=cfg)
        record["held_out_loss_conditional"] = held_out_loss(
            ema, x_test[held], F.one_hot(y_test[held], 10).to(torch.float32), cfg=cfg
        )
        record["train_split_loss"] = held_out_loss(ema, x_train[held], None, cfg=cfg)
        files.save_network(
            ema,
            out / files.DENOISER_FILE,
            files.DENOISER_FORMAT,
            extra={"steps": steps, "seed": seed, "final_loss": record["final_loss"]},
        )
        wall = time.perf_counter() - t0

        provenance = {
            "command": command,
            "seed": seed,
            "machine": _machine(),
            "wall_seconds": wall,
            "data": {
                "source": DATA_SOURCE,
                "n_images": int(len(labels)),
                "n_train": int(len(train_idx)),
                "n_test": int(len(test_idx)),
                **split_meta,
            },
            "denoiser": {
                "config": {k: v for k, v in asdict(cfg).items() if k != "network"},
                "network": ema.config,
                **record,
            },
            "classifier": {"network": clf.config, **clf_record},
            "gaussian": {
                "trace": gaussian.cov.trace(),
                "top_eigenvalues": gaussian.cov.spectrum()[:5].tolist(),
                "zero_eigenvalues": int((gaussian.cov.spectrum() <= 1e-12).sum()),
            },
            "files": sorted(p.name for p in out.iterdir() if p.name.startswith("digits_")),
        }
    finally:
        torch.set_num_threads(previous_threads)
    text = json.dumps(provenance, indent=2)  # encoded before the file is touched
    with atomic_writer(out / "digits_provenance.json", "w") as f:
        f.write(text)
    return provenance
