"""``gaussport probe``: how much of the model's score the Gaussian, a mixture and the training set explain,
per noise level: table, PNG and JSON, with the safe and the automatically chosen teleport level."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

__all__ = ["MIXTURES", "add_parser", "check", "run"]

MIXTURES = ("class", "kmeans", "none")
STATS_SUFFIXES = (".safetensors", ".npz")
DIGITS_SHAPE = (1, 8, 8)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # the grid the auto level is chosen for (Karras, rho 7)
KMEANS_SEED = 0
DEFAULT_COMPONENTS = 10


def check(args: argparse.Namespace) -> None:
    """The flags together and the files' contents, before the model is loaded."""
    from ..digits.files import TEST_SET_FILE
    from ..solvers import get as get_solver

    if args.mixture is None:  # the class Gaussians need the digits' labels; other data get k-means
        args.mixture = "class" if args.data is None else "kmeans"
    if args.components is not None and args.mixture != "kmeans":
        raise ValueError("--components applies to --mixture kmeans; drop it or pass --mixture kmeans.")
    if args.mixture == "class" and args.data is not None:
        raise ValueError(
            "--mixture class needs the digits' class labels, which --data does not carry; pass --mixture "
            "kmeans (with --components K) or none with --data."
        )
    if args.data is None and args.model is not None and not (args.model / TEST_SET_FILE).is_file():
        raise ValueError(
            f"--model {args.model} has no test split ({TEST_SET_FILE}) to tell the training split by; "
            "pass --data with the model's training data."
        )
    if _levels_for(get_solver(args.solver), args.nfe) is None:
        raise ValueError(
            f"--solver {args.solver} cannot spend --nfe {args.nfe} exactly (Heun-type solvers make 2n - 1 "
            "evaluations: give an odd budget)."
        )
    if args.statistics is not None:
        from ..sampling import load_statistics

        args.gaussian = load_statistics(args.statistics)  # a small file: reading it checks it
        if tuple(args.gaussian.shape) != DIGITS_SHAPE:
            raise ValueError(
                f"--statistics {args.statistics} holds a Gaussian of shape {list(args.gaussian.shape)}; the "
                f"digits model needs shape {list(DIGITS_SHAPE)} (fit it to the model's training data)."
            )
    if args.data is not None:
        from ..analytic.sources import as_batches

        args.source_batches = as_batches(args.data, disable=True)  # reads headers: no pixel decoded
        shape = args.source_batches.shape
        if shape is not None and math.prod(shape) != math.prod(DIGITS_SHAPE):
            raise ValueError(
                f"--data {args.data} holds samples of shape {list(shape)}; the digits model needs "
                f"{math.prod(DIGITS_SHAPE)} values per sample ({list(DIGITS_SHAPE)})."
            )
        count = args.source_batches.count
        if (
            args.mixture == "kmeans"
            and count is not None
            and args.components is not None
            and args.components > count
        ):
            raise ValueError(
                f"--components {args.components} exceeds the {count} samples of --data {args.data}; give "
                f"at most {count}."
            )


def _levels_for(solver: Any, nfe: int) -> int | None:
    """The number of positive levels whose Karras grid costs exactly ``nfe`` evaluations, if any."""
    from ..grids import karras

    for n in range(1, nfe + 2):
        cost = solver.evaluations(karras(n, SIGMA_MIN, SIGMA_MAX))
        if cost == nfe:
            return n
        if cost > nfe:
            return None
    return None


def _training_split(directory: Any) -> Any:
    """The digits training split in model space, ``[N, 1, 8, 8]``: scikit-learn's digits minus the
    model's test split."""
    import numpy as np

    from .. import digits
    from ..digits.files import pixels_to_model
    from ..digits.train import load_sklearn_digits

    pixels, labels = load_sklearn_digits()
    test = digits.load_digits_test_set(directory=directory).indices.numpy()
    train = np.setdiff1d(np.arange(len(labels)), test)
    return pixels_to_model(pixels[train]).unsqueeze(1).double()


def _auto_level(net: Any, gaussian: Any, data: Any, args: argparse.Namespace) -> tuple[float, str]:
    """``(level, surrogate form)``: the level ``sample(..., sigma_skip="auto")`` picks for ``--solver``
    at ``--nfe`` (Karras grid from 80), probed from ``data`` (the record cached as auto caches it),
    with the surrogate ``--surrogate`` (``auto``: chosen from the probe record)."""
    from ..grids import karras
    from ..solvers import get as get_solver
    from ..tuning.auto import PROBE_SEED, auto_sigma_skip, surrogate_form
    from ..tuning.probes import probe

    sigmas = karras(_levels_for(get_solver(args.solver), args.nfe), SIGMA_MIN, SIGMA_MAX)
    record = probe(net, gaussian, data, seed=PROBE_SEED, device=args.device)
    form = surrogate_form(record) if args.surrogate == "auto" else args.surrogate
    level = auto_sigma_skip(net, gaussian, sigmas, args.solver, probes=record, surrogate=args.surrogate)
    return float(level), form


def _load_data(args: argparse.Namespace) -> tuple[Any, str]:
    """``(data [N, 1, 8, 8] float64, description)``."""
    import torch

    if args.data is None:
        data = _training_split(args.model)
        where = "the shipped model's" if args.model is None else f"{args.model}'s"
        return data, f"the digits training split ({data.shape[0]} images; {where} test split held out)"
    batches = args.source_batches
    data = torch.cat([b.to(torch.float64) for b in batches]).reshape(-1, *DIGITS_SHAPE)
    return data, f"{batches.description} ({data.shape[0]} samples)"


def _models(gaussian: Any, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from .. import digits
    from ..analytic import EmpiricalMixture, fit_kmeans_mixture

    models: dict[str, Any] = {"gaussian": gaussian}
    if args.mixture == "class":
        models["class mixture"] = digits.load_digits_class_gaussians(directory=args.model)
    elif args.mixture == "kmeans":
        k = args.components or min(DEFAULT_COMPONENTS, data.shape[0])
        gen = torch.Generator().manual_seed(KMEANS_SEED)
        models[f"k-means mixture ({k})"] = fit_kmeans_mixture(data, k, generator=gen)
    if not args.no_empirical:
        models["training set"] = EmpiricalMixture(data)
    return models


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import digits
    from ..evaluation import markdown_table
    from ..evaluation.explained import explained_variance, plot_explained_variance

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        net = digits.load_digits_denoiser(device=args.device, directory=args.model)
        gaussian = getattr(args, "gaussian", None)
        if gaussian is None:
            gaussian = digits.load_digits_gaussian(directory=args.model)
        data, description = _load_data(args)
        models = _models(gaussian, data, args)
        result = explained_variance(
            net,
            models,
            data,
            args.levels,
            probes=args.probes,
            seed=args.seed,
            percentile=args.percentile,
            device=args.device,
            disable=args.quiet or None,
        )
        safe = result.safe_level("gaussian", args.tau)
        auto, form = _auto_level(net, gaussian, data, args)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    print(
        f"gaussport probe: {result.probes} probes per level from {description}, seed {result.seed}; "
        f"{len(result.levels)} levels in {seconds:.1f} s"
    )
    print(
        "1-EV_s: score-space unexplained variance = squared relative velocity error (mean); "
        f"vel. err.: |D - D_m| / |x - D| (mean, {result.percentile:g}th percentile)"
    )
    print(markdown_table(result.header(), result.rows()))
    safe_text = f"{safe:g}" if math.isfinite(safe) else "none (no level below tau)"
    print(f"safe level (gaussian, tau {args.tau:g}): {safe_text}")
    print(f"auto level ({args.solver}, NFE {args.nfe}, {form} surrogate): {auto:.4g}")
    if args.plot is not None:
        os.makedirs(args.plot.parent, exist_ok=True)
        drawn = plot_explained_variance(
            result,
            args.plot,
            tau=args.tau,
            safe=safe,
            auto=auto,
            auto_label=f"auto level ({args.solver}, NFE {args.nfe})",
            title=f"gaussport probe: the digits model against analytic models; {result.probes} probes "
            f"per level from {description}",
        )
        if drawn:
            print(f"wrote {args.plot}")
    if args.json is not None:
        from .._files import atomic_writer

        record = result.to_dict()
        record.update(
            data=description,
            tau=args.tau,
            safe_level=safe if math.isfinite(safe) else None,
            auto_level={
                "solver": args.solver,
                "nfe": args.nfe,
                "sigma_skip": auto,
                "surrogate": form,
            },
            model="shipped digits model" if args.model is None else os.fspath(args.model),
            statistics=None if args.statistics is None else os.fspath(args.statistics),
        )
        os.makedirs(args.json.parent, exist_ok=True)
        with atomic_writer(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport probe`` and its flags, each declaring what it accepts (its type or choices)."""
    from ..demo._arguments import (
        DataPath,
        Directory,
        InputFile,
        Integer,
        Number,
        OutputFile,
        SolverName,
    )
    from ..evaluation.explained import DEFAULT_LEVELS as LEVELS
    from ._common import add_model_run_flags

    probe = subparsers.add_parser(
        "probe",
        help="how much of the model's score the Gaussian, a mixture and the training set explain per sigma",
        description="Probe the digits model (the shipped one, or --model DIR) at noisy data x = x0 + "
        "sigma * eps on a ladder of noise levels and compare its denoiser with analytic models: the "
        "warm-start Gaussian (the model's own, or --statistics), a Gaussian mixture (--mixture: the "
        "ten class Gaussians, a k-means fit, or none) and the training set as point masses (the exact "
        "memorising denoiser; --no-empirical drops it). Per level and model it reports 1 - EV_s, the "
        "score-space fraction of unexplained variance |s - s_m|^2 / |s|^2 (which equals the squared "
        "relative velocity error |D - D_m|^2 / |x - D|^2), the relative velocity error (mean and a "
        "percentile) and, in the JSON, the denoiser-space 1 - EV. It marks the safe level (the lowest "
        "level from which on the Gaussian's mean velocity error stays below --tau) and the level "
        "sample(..., sigma_skip='auto') picks for --solver at --nfe. One model call per probe and "
        "level, no sampling: a few seconds at the defaults. Derivation and reading: docs/choosing.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument(
        "--model",
        type=Directory("model"),
        metavar="DIR",
        help="a model written by `gaussport train-demo --out DIR` (default: the shipped model)",
    )
    probe.add_argument(
        "--statistics",
        type=InputFile(STATS_SUFFIXES, "statistics"),
        metavar="FILE",
        help="the warm-start Gaussian (a `gaussport fit` file); default: the model's own",
    )
    probe.add_argument(
        "--data",
        type=DataPath(),
        metavar="PATH",
        help="the training data the probes start from and the training-set mixture is made of (a "
        "folder of 8x8 images or a .npy/.npz file, values in [-1, 1]); default: the digits training split",
    )
    probe.add_argument(
        "--mixture",
        choices=MIXTURES,
        help="the Gaussian mixture compared: class (the ten class Gaussians of the digits: the default "
        "without --data), kmeans (fitted to the data, --components K: the default with --data), none",
    )
    probe.add_argument(
        "--components",
        type=Integer(1, 4096),
        metavar="K",
        help=f"components of --mixture kmeans (default {DEFAULT_COMPONENTS}, at most the samples)",
    )
    probe.add_argument(
        "--no-empirical",
        action="store_true",
        help="leave out the training set as a point-mass mixture (its cost grows with the data's size)",
    )
    probe.add_argument(
        "--levels",
        type=Number(0.0, 1000.0),
        nargs="+",
        metavar="SIGMA",
        default=list(LEVELS),
        help=f"the noise levels (default: {' '.join(f'{v:g}' for v in LEVELS)})",
    )
    probe.add_argument(
        "--probes",
        type=Integer(1, 1_000_000),
        default=256,
        metavar="N",
        help="probes per level (default 256)",
    )
    probe.add_argument(
        "--seed",
        type=Integer(0, 2**63 - 1),
        default=0,
        metavar="S",
        help="seed of the probes' data rows and noise (default 0)",
    )
    probe.add_argument(
        "--percentile",
        type=Number(0.0, 100.0),
        default=90.0,
        metavar="Q",
        help="the percentile of the velocity error reported beside the mean (default 90)",
    )
    probe.add_argument(
        "--tau",
        type=Number(0.0, 1.0),
        default=3e-3,
        metavar="T",
        help="the velocity-error threshold of the safe level (default 0.003)",
    )
    probe.add_argument(
        "--solver",
        type=SolverName(),
        default="dpmpp_2m",
        metavar="NAME",
        help="the solver the auto level is chosen for (default dpmpp_2m)",
    )
    probe.add_argument(
        "--nfe",
        type=Integer(1, 1000),
        default=6,
        metavar="N",
        help="the budget the auto level is chosen for (default 6; Karras grid from sigma 80)",
    )
    probe.add_argument(
        "--surrogate",
        choices=("auto", "departure", "mixture"),
        default="auto",
        help="what the auto level's sweep runs on: auto (default; the departure form where the model "
        "departs from its Gaussian by at least twice as much as the data mixture does, else the "
        "mixture form), departure (the data mixture plus the model's affine departure from it), "
        "mixture (the data mixture pulled towards the Gaussian); docs/auto-level.md#which-surrogate",
    )
    probe.add_argument(
        "--plot", type=OutputFile((".png",), "plot"), metavar="FILE", help="write the plot (PNG)"
    )
    probe.add_argument(
        "--json", type=OutputFile((".json",), "result"), metavar="FILE", help="write every statistic as JSON"
    )
    add_model_run_flags(probe)
    probe.set_defaults(func=run, check=check)
    return probe
