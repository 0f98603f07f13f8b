"""``gaussport demo``: the shipped digits model sampled with and without the Gaussian warm start.

The default target, :func:`run_digits_demo`, loads the shipped 8x8-digits denoiser and the Gaussian
fitted to its training split (:mod:`gaussport.models`) and measures, with the evaluation harness
(:class:`gaussport.evaluation.Evaluator`), each solver at each NFE budget on a fixed set of seeds

* without a teleport (the solver on the full Karras grid from ``sigma_max = 80``), and
* after a teleport to ``sigma_skip`` (``teleport="respace"``: the same NFE re-spaced below it;
  ``"truncate"``: the Karras grid below it),

by the **trajectory error** (RMS distance to the exact ODE endpoint of the same seed, a float64 RK4
reference solve of the same network: solver error, not model error) and, optionally, a **Frechet
distance** to the held-out digits (noisy at the demo's sample counts: see the docs).
:func:`write_digits_outputs` writes PNG sample grids, a quality-vs-NFE plot, ``results.json`` and
``results.csv``; :func:`digits_table` formats the table the command line prints.

The default teleport level ``sigma_skip = 2`` agrees with the harness smoke test and the phase-1
sweep, and with a calibration on 16 seeds apart from the demo's (1000-1015; levels 1, 1.5, 2, 3, 5,
10): the best level for DPM-Solver++(2M) was 2 at NFE 6 and 8 and 3 at NFE 10, for Heun 1 to 2.
Teleporting lower replaces more of the network's own trajectory by the Gaussian's (the warm-start
error, about 0.075 RMS at ``sigma_skip = 2``, which more solver steps do not remove); teleporting
higher leaves the solver more of the trajectory to cover with the same evaluations.

The analytic target, :func:`run_mixture_demo` (``gaussport demo --target mixture``), needs no model:
a built-in anisotropic Gaussian mixture with an exact denoiser, the warm start its moment-matched
Gaussian. For each grid size it reports the error to the exact endpoint of

* plain Heun on a Karras grid (``2n - 1`` evaluations for ``n`` steps),
* Heun after a teleport to ``sigma_skip`` with the same number of steps re-spaced below it
  (same evaluations: ``schedule="respace"``),
* Heun after a teleport onto the largest grid level at or below ``sigma_skip``, keeping the grid
  below it (fewer evaluations: ``schedule="truncate"``, the paper's Heun setting).

:func:`train_demo_model` (``gaussport train-demo``, ``benchmarks/train_demo.py``) retrains the
digits model into a directory that the loaders and ``gaussport demo --model`` accept.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import grids
from .analytic import GaussianMixture, anisotropic_mixture
from .evaluation import (
    TELEPORTS,
    Evaluation,
    Evaluator,
    Series,
    markdown_table,
    nfe_to_reach,
    plot_quality,
    save_sample_panels,
)
from .reference import reference_solve
from .solve import sample, solve
from .solvers import get as get_solver

__all__ = [
    "DIGITS_DEFAULTS",
    "DigitsDemo",
    "run_digits_demo",
    "digits_table",
    "write_digits_outputs",
    "train_demo_model",
    "DemoRow",
    "demo_target",
    "run_mixture_demo",
    "format_table",
    "plot_rows",
]

logger = logging.getLogger("gaussport")

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

# ---------------------------------------------------------------------- the digits demo
DIGITS_DEFAULTS: dict[str, Any] = {
    "solvers": ("dpmpp_2m",),
    "nfes": (6, 8, 10),
    "sigma_skip": 2.0,
    "teleport": "respace",
    "batch": 32,
    "seed": 0,
    "frechet_samples": 200,
    "frechet_seeds": 2,
    "reference_steps": 8,
}
"""The defaults of :func:`run_digits_demo` and ``gaussport demo`` (about 25 s on one CPU thread).

DPM-Solver++(2M) is the default solver: in the harness smoke test (16 seeds) it had the lowest
trajectory error of Heun and DPM-Solver++(2M) at every NFE in 6..10, with and without a teleport.
``reference_steps = 8`` RK4 steps per unit of ``lambda`` put the exact endpoints within 1.4e-5 RMS
of a solve with twice the steps, far below the errors measured (0.07 and up).
"""

FRECHET_SEED_OFFSET = 10_000  # Frechet draws use their own generators, apart from the sample seeds


@dataclass(frozen=True)
class DigitsDemo:
    """The measurements of one :func:`run_digits_demo` run.

    Attributes:
        evaluations: one :class:`~gaussport.evaluation.Evaluation` per solver, NFE and mode
            (``"none"`` first, then the teleport), in that order.
        exact: the exact ODE endpoints of the seeds (float64, CPU).
        settings: the arguments of the run (JSON-serialisable).
        reference_seconds: wall time of the exact endpoints.
        seconds: wall time of the whole run.
    """

    evaluations: tuple[Evaluation, ...]
    exact: torch.Tensor
    settings: dict[str, Any]
    reference_seconds: float
    seconds: float

    def find(self, solver: str, nfe: int, teleport: str) -> Evaluation:
        """The evaluation of ``solver`` at budget ``nfe`` with ``teleport`` (``"none"`` or the run's)."""
        for e in self.evaluations:
            if e.solver == solver and e.nfe_budget == nfe and e.teleport == teleport:
                return e
        raise KeyError(f"no evaluation of {solver!r} at NFE {nfe} with teleport {teleport!r}.")

    def reach(self) -> dict[str, float]:
        """Per solver: the NFE at which the teleport reaches the no-teleport error at the largest NFE.

        Log-log interpolation (:func:`~gaussport.evaluation.nfe_to_reach`); the smallest measured NFE
        when already there, ``inf`` when never.
        """
        teleport = self.settings["teleport"]
        nfes = sorted(self.settings["nfes"])
        out = {}
        for solver in self.settings["solvers"]:
            target = self.find(solver, nfes[-1], "none").error
            warm = [self.find(solver, n, teleport) for n in nfes]
            out[solver] = nfe_to_reach([e.nfe for e in warm], [e.error for e in warm], target)
        return out


def _check_choices(solvers: Sequence[str], nfes: Sequence[int], teleport: str) -> None:
    if not solvers:
        raise ValueError("no solver given; pass at least one name (see `gaussport solvers`).")
    for name in solvers:
        get_solver(name)  # an unknown name fails here, before any model call
    if not nfes:
        raise ValueError("no NFE budget given; pass at least one (e.g. 6 8 10).")
    for n in nfes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"NFE budgets must be positive integers; got {n!r}.")
    if teleport not in TELEPORTS[1:]:
        raise ValueError(f"teleport must be one of {TELEPORTS[1:]}; got {teleport!r}.")


def run_digits_demo(
    solvers: Sequence[str] = DIGITS_DEFAULTS["solvers"],
    nfes: Sequence[int] = DIGITS_DEFAULTS["nfes"],
    *,
    sigma_skip: float = DIGITS_DEFAULTS["sigma_skip"],
    teleport: str = DIGITS_DEFAULTS["teleport"],
    batch: int = DIGITS_DEFAULTS["batch"],
    seed: int = DIGITS_DEFAULTS["seed"],
    frechet_samples: int = DIGITS_DEFAULTS["frechet_samples"],
    frechet_seeds: int = DIGITS_DEFAULTS["frechet_seeds"],
    reference_steps: int = DIGITS_DEFAULTS["reference_steps"],
    device: torch.device | str | None = None,
    directory: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    disable: bool | None = None,
) -> DigitsDemo:
    """Sample the digits model with each solver at each NFE, with and without a teleport.

    Args:
        solvers: registered solver names.
        nfes: the NFE budgets (:meth:`~gaussport.evaluation.Evaluator.budget`: the NFE actually used is
            reported; Heun, for instance, uses ``2n - 1 <= NFE``).
        sigma_skip: the teleport level.
        teleport: ``"respace"`` or ``"truncate"`` (:meth:`~gaussport.evaluation.Evaluator.evaluate`).
        batch: the number of seeds (samples) of the trajectory error and the sample grids.
        seed: the first seed; the seeds are ``seed, seed + 1, ..., seed + batch - 1``.
        frechet_samples: samples per Frechet seed; 0 disables the Frechet distance.
        frechet_seeds: the number of Frechet seeds (their spread is the reported noise).
        reference_steps: RK4 steps per unit of ``lambda`` for the exact endpoints.
        device: where the model runs.
        directory: a model trained with :func:`train_demo_model` (default: the shipped one).
        cache_dir: keep the exact endpoints on disk between runs.
        disable: hides the progress bars (``None``: only on a terminal, as tqdm does).

    Returns:
        A :class:`DigitsDemo`.

    Raises:
        ValueError: for an unknown solver or teleport mode, an empty or non-positive NFE list, a
            non-positive batch, a negative sample count or a ``sigma_skip`` outside (0.002, 80].
    """
    solvers, nfes = tuple(solvers), tuple(sorted(set(nfes)))
    _check_choices(solvers, nfes, teleport)
    if batch < 1:
        raise ValueError(f"batch (the number of seeds) must be at least 1; got {batch}.")
    if frechet_samples < 0 or frechet_samples == 1:
        raise ValueError(
            f"frechet_samples must be 0 (no Frechet distance) or at least 2; got {frechet_samples}."
        )
    with_fd = frechet_samples > 0
    if with_fd and frechet_seeds < 1:
        raise ValueError(f"frechet_seeds must be at least 1 with frechet_samples > 0; got {frechet_seeds}.")
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if with_fd:
        first = FRECHET_SEED_OFFSET + seed
        extra = {"frechet_seeds": range(first, first + frechet_seeds), "frechet_samples": frechet_samples}
    else:
        extra = {"frechet_metric": None}
    ev = Evaluator.digits(
        directory=directory,
        device=device,
        seeds=range(seed, seed + batch),
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        reference_steps=reference_steps,
        cache_dir=cache_dir,
        disable=disable,
        **extra,
    )
    ev.budget(solvers[0], nfes[0], teleport, sigma_skip)  # a bad sigma_skip fails before the reference
    exact = ev.reference()
    ev.disable = True  # one bar over the configurations below, not one per solve
    jobs = [(s, n, t) for s in solvers for n in nfes for t in ("none", teleport)]
    evaluations = []
    for solver, nfe, mode in tqdm(jobs, disable=disable, desc="gaussport demo", unit="run"):
        skip = None if mode == "none" else sigma_skip
        e = ev.evaluate(solver, nfe, teleport=mode, sigma_skip=skip, frechet=with_fd)
        logger.info(
            "%s NFE %d (%d used) %s: trajectory error %.4g%s",
            solver,
            nfe,
            e.nfe,
            "no teleport" if mode == "none" else f"teleport to {sigma_skip:g}",
            e.error,
            "" if e.frechet is None else f", Frechet {e.frechet.mean:.3g}",
        )
        evaluations.append(e)
    settings = {
        "target": "digits",
        "model": "shipped" if directory is None else os.fspath(directory),
        "solvers": list(solvers),
        "nfes": list(nfes),
        "sigma_skip": float(sigma_skip),
        "teleport": teleport,
        "seeds": [seed, seed + batch - 1],
        "frechet_samples": frechet_samples,
        "frechet_seeds": list(ev.frechet_seeds),
        "reference_steps": reference_steps,
        "grid": f"Karras rho=7, sigma {SIGMA_MAX:g} -> {SIGMA_MIN:g}, then 0",
        "device": str(ev.device),
    }
    return DigitsDemo(tuple(evaluations), exact, settings, ev.reference_seconds, time.perf_counter() - start)


def _mode_label(teleport: str, sigma_skip: float) -> str:
    return f"teleport to {sigma_skip:g} ({teleport})"


def digits_table(result: DigitsDemo) -> str:
    """The demo's results as a markdown table, with a line per solver on the NFE the teleport saves."""
    s = result.settings
    with_fd = s["frechet_samples"] > 0
    header = ["solver", "NFE", "error, no teleport"]
    header += ["Frechet, no teleport"] if with_fd else []
    header += [f"error, teleport to {s['sigma_skip']:g}"]
    header += [f"Frechet, teleport to {s['sigma_skip']:g}"] if with_fd else []
    header += ["error ratio"]

    def fd(e: Evaluation) -> str:
        if e.frechet is None:
            return "-"
        std = e.frechet.std
        return f"{e.frechet.mean:.3g}" + ("" if math.isnan(std) else f" +- {std:.2g}")

    rows = []
    for solver in s["solvers"]:
        for n in s["nfes"]:
            plain, warm = result.find(solver, n, "none"), result.find(solver, n, s["teleport"])
            nfe = f"{plain.nfe}" if plain.nfe == warm.nfe else f"{plain.nfe} / {warm.nfe}"
            row: list[Any] = [solver, nfe, plain.error]
            row += [fd(plain)] if with_fd else []
            row += [warm.error]
            row += [fd(warm)] if with_fd else []
            row += [plain.error / warm.error]
            rows.append(row)
    lines = [markdown_table(header, rows), ""]
    for solver, nfe in result.reach().items():
        level = result.find(solver, s["nfes"][-1], "none")
        smallest = result.find(solver, s["nfes"][0], s["teleport"]).nfe
        where = "no NFE measured (not reached)" if math.isinf(nfe) else f"NFE {nfe:.1f}"
        if nfe == smallest:
            where = f"NFE <= {smallest} (the smallest budget measured)"
        lines.append(
            f"{solver}: the teleport reaches the no-teleport error at NFE {level.nfe} ({level.error:.3g}) "
            f"at {where}."
        )
    lines.append(
        f"error: RMS over {s['seeds'][1] - s['seeds'][0] + 1} seeds and pixels of the distance to the exact "
        f"ODE endpoint of the same seed (RK4, {s['reference_steps']} steps per unit of lambda)."
    )
    if with_fd:
        lines.append(
            f"Frechet: classifier-feature Frechet distance to the held-out digits, mean +- std over "
            f"{len(s['frechet_seeds'])} x {s['frechet_samples']} samples (noisy at this size)."
        )
    return "\n".join(lines)


def write_digits_outputs(
    result: DigitsDemo, out: str | os.PathLike[str], *, plots: bool = True
) -> list[Path]:
    """Write the demo's files into ``out`` and return their paths.

    ``results.json`` (settings, one record per evaluation, the NFE the teleport saves) and
    ``results.csv`` always; with ``plots`` (and matplotlib installed) ``samples_nfe<N>.png`` per NFE
    budget (the exact endpoints, then per solver no teleport and teleport, same seeds side by side)
    and ``quality_vs_nfe.png``.
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = result.settings
    written = []
    record = {
        "settings": s,
        "reach": {k: (None if math.isinf(v) else v) for k, v in result.reach().items()},
        "reference_seconds": result.reference_seconds,
        "seconds": result.seconds,
        "evaluations": [e.summary() for e in result.evaluations],
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    written.append(path)
    columns = ["solver", "teleport", "sigma_skip", "nfe_budget", "nfe", "trajectory_rms", "trajectory_mean"]
    columns += ["trajectory_max", "frechet_mean", "frechet_std", "seconds"]
    path = out_dir / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for e in result.evaluations:
            writer.writerow(e.summary())
    written.append(path)
    if not plots:
        return written
    mode = _mode_label(s["teleport"], s["sigma_skip"])
    for n in s["nfes"]:
        panels = [("exact ODE endpoints", result.exact)]
        for solver in s["solvers"]:
            for e in (result.find(solver, n, "none"), result.find(solver, n, s["teleport"])):
                what = "no teleport" if e.teleport == "none" else mode
                panels.append((f"{solver}, {what}\nNFE {e.nfe}, error {e.error:.3g}", e.samples))
        path = out_dir / f"samples_nfe{n}.png"
        title = f"8x8 digits, seeds {s['seeds'][0]}..{s['seeds'][1]}, NFE budget {n}"
        if save_sample_panels(panels, path, title=title):
            written.append(path)
    series = []
    for solver in s["solvers"]:
        for t, style in (("none", "o-"), (s["teleport"], "s--")):
            es = [result.find(solver, n, t) for n in s["nfes"]]
            label = f"{solver}, no teleport" if t == "none" else f"{solver}, {mode}"
            series.append(
                Series(label, [e.nfe for e in es], [e.error for e in es], [e.frechet for e in es], style)
            )
    path = out_dir / "quality_vs_nfe.png"
    if plot_quality(series, path, title="gaussport demo: the shipped 8x8-digits model"):
        written.append(path)
    return written


# ---------------------------------------------------------------------- training the demo model
def train_demo_model(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    steps: int = 3000,
    batch_size: int = 128,
    classifier_epochs: int = 60,
    reference_samples: int = 1000,
    num_threads: int | None = 2,
    disable: bool | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train the digits model into ``out``: weights, statistics, test split, provenance and model card.

    Runs :func:`gaussport.models.train.train_digits` (needs scikit-learn: ``pip install
    'gaussport[train]'``), then measures Frechet-distance reference points (training split, samples
    of the fitted Gaussian, ``reference_samples`` model samples with Heun at NFE 35) and writes
    ``digits_provenance.json`` and ``DIGITS_MODEL.md``. The loaders, :meth:`Evaluator.digits
    <gaussport.evaluation.Evaluator.digits>` and ``gaussport demo --model`` accept ``out`` as
    ``directory=``. ``out = src/gaussport/data`` regenerates the shipped files. Training runs on the
    CPU (the model is small): 3000 steps take about 10-20 minutes on 2 CPU cores.

    Args:
        out: the output directory (created if needed).
        seed: the single seed of the run.
        steps: denoiser optimiser steps.
        batch_size: denoiser batch size.
        classifier_epochs: classifier training epochs.
        reference_samples: model and Gaussian samples for the Frechet reference points (at least 2).
        num_threads: ``torch.set_num_threads`` during the run (restored afterwards).
        disable: hides the progress bars.
        command: the command line recorded in the provenance.

    Returns:
        The provenance record (also in ``out/digits_provenance.json``).
    """
    from .models.train import train_digits

    if reference_samples < 2:
        raise ValueError(f"reference_samples must be at least 2; got {reference_samples}.")
    out_dir = Path(out)
    provenance = train_digits(
        out_dir,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        classifier_epochs=classifier_epochs,
        num_threads=num_threads,
        disable=disable,
        command=command,
    )
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        refs = _frechet_reference_points(out_dir, seed, n=reference_samples)
    finally:
        torch.set_num_threads(previous)
    provenance["frechet_reference_points"] = refs
    with open(out_dir / "digits_provenance.json", "w") as f:
        json.dump(provenance, f, indent=2)
    (out_dir / "DIGITS_MODEL.md").write_text(_model_card(provenance, refs))
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
    from .metrics import digits_features, feature_statistics, frechet_distance
    from .models import (
        load_digits_classifier,
        load_digits_denoiser,
        load_digits_gaussian,
        load_digits_test_set,
        pixels_to_model,
    )
    from .models.train import load_sklearn_digits, stratified_split

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
    return f"""# The shipped 8x8-digits model

Files in this directory (`gaussport/data/` for the shipped model), all written by one run of
`gaussport train-demo` or `benchmarks/train_demo.py` (the same code: `gaussport.demo.train_demo_model`,
which calls `gaussport.models.train.train_digits`); loaded with
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


# ---------------------------------------------------------------------- the analytic mixture demo
@dataclass(frozen=True)
class DemoRow:
    """One line of the demo table (errors are RMS per coordinate against the exact endpoint)."""

    steps: int
    nfe_plain: int
    error_plain: float
    nfe_respace: int
    error_respace: float
    nfe_truncate: int
    error_truncate: float


def demo_target() -> GaussianMixture:
    """The built-in target: 32 dimensions, 6 anisotropic components (eigenvalues 1e-3..0.1)."""
    return anisotropic_mixture(dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0)


def _rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt())


def run_mixture_demo(
    steps: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 12, 16),
    *,
    solver: str = "heun",
    sigma_skip: float = 10.0,
    batch: int = 64,
    seed: int = 0,
    disable: bool | None = None,
) -> list[DemoRow]:
    """Run the demo and return its table rows (see the module docstring)."""
    get_solver(solver)  # an unknown name fails here, before the reference solve
    target = demo_target()
    gaussian = target.moments()
    x = target.sample(batch, SIGMA_MAX, torch.Generator().manual_seed(seed), dtype=torch.float64)
    logger.info("computing the exact endpoints (RK4 reference solve) ...")
    exact = reference_solve(
        target, x, grids.karras(2, SIGMA_MIN, SIGMA_MAX), steps_per_unit=50, disable=disable
    )
    rows = []
    for n in steps:
        sigmas = grids.karras(n, SIGMA_MIN, SIGMA_MAX)
        plain = solve(target, x, sigmas, solver, disable=True)
        respace = sample(
            target,
            x,
            sigmas,
            solver,
            warm_start=gaussian,
            sigma_skip=sigma_skip,
            schedule="respace",
            disable=True,
        )
        on_grid = max(s for s in sigmas if s <= sigma_skip)
        truncate = sample(
            target,
            x,
            sigmas,
            solver,
            warm_start=gaussian,
            sigma_skip=on_grid,
            schedule="truncate",
            disable=True,
        )
        rows.append(
            DemoRow(
                n,
                plain.nfe,
                _rms(plain.x, exact),
                respace.nfe,
                _rms(respace.x, exact),
                truncate.nfe,
                _rms(truncate.x, exact),
            )
        )
    return rows


def format_table(rows: list[DemoRow], sigma_skip: float) -> str:
    """The demo table as aligned text."""
    head = (
        f"{'steps':>5}  {'NFE':>4} {'no teleport':>12}  |  teleport to sigma={sigma_skip:g}:  "
        f"{'NFE':>4} {'respaced':>10}  {'NFE':>4} {'truncated':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.steps:>5}  {r.nfe_plain:>4} {r.error_plain:>12.4g}  |  {'':>26}"
            f"{r.nfe_respace:>4} {r.error_respace:>10.4g}  {r.nfe_truncate:>4} {r.error_truncate:>10.4g}"
        )
    lines.append("errors: RMS per coordinate against the exact ODE endpoint from the same noise")
    return "\n".join(lines)


def plot_rows(rows: list[DemoRow], path: str | os.PathLike[str], *, solver: str, sigma_skip: float) -> bool:
    """Write the error-vs-NFE plot as a PNG; returns False (with a log message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install 'gaussport[plot]').")
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.loglog(
        [r.nfe_plain for r in rows], [r.error_plain for r in rows], "o-", label=f"{solver}, no teleport"
    )
    ax.loglog(
        [r.nfe_respace for r in rows],
        [r.error_respace for r in rows],
        "s-",
        label=f"teleport to {sigma_skip:g} + {solver} (respaced)",
    )
    truncated = sorted((r.nfe_truncate, r.error_truncate) for r in rows)
    ax.loglog(
        [p[0] for p in truncated],
        [p[1] for p in truncated],
        "^--",
        label=f"teleport to {sigma_skip:g} + {solver} (truncated grid)",
    )
    ax.set_xlabel("denoiser evaluations (NFE)")
    ax.set_ylabel("RMS error to the exact endpoint")
    ax.set_title("Gaussian-mixture target (d = 32, 6 components)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
