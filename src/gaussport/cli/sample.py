"""``gaussport sample``: mass sampling to disk (PNG folder and/or ``.npz`` shards), resumable, torchrun-ready.

A thin layer over :func:`gaussport.generate.sample_to_disk`: it loads the model -- the shipped digits
model, a directory written by ``gaussport train-demo --out DIR``, or an unconditional pixel-space
diffusers pipeline folder (``model_index.json`` with a UNet and a DDPM-family scheduler, weights in
safetensors) -- and under ``torchrun`` takes this process's share of the shards from the launcher's
``RANK`` and ``WORLD_SIZE`` (and its GPU from ``LOCAL_RANK`` with ``--device cuda``). Latent and
text-conditioned pipelines and EDM pickles are not loaded here: call
:func:`~gaussport.generate.sample_to_disk` with the adapter's denoiser (and a decoder as ``to_pixels``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ..demo._arguments import Directory, InputFile, Integer, Number, SolverName
from ._common import add_model_run_flags

__all__ = ["ModelSource", "add_parser", "check", "run"]

SHIPPED = "digits"
PIPELINE_INDEX = "model_index.json"  # what makes a folder a diffusers pipeline
FORMAT_CHOICES = ("png,npz", "png", "npz")
DIGITS_SHAPE = (1, 8, 8)


class ModelSource(Directory):
    """``digits`` (the shipped model), a directory written by ``gaussport train-demo --out DIR``, or a
    diffusers pipeline folder (it holds ``model_index.json``).

    A :class:`~gaussport.demo._arguments.Directory` of role ``"model"`` that also accepts the word
    ``digits`` (a folder of that name: ``./digits``) and pipeline folders, so the bad-input tests
    generate its cases.
    """

    name = "model"

    def __init__(self) -> None:
        super().__init__("model")

    def convert(self, text: str) -> Path | str:
        if text == SHIPPED:
            return SHIPPED
        if text and (Path(text) / PIPELINE_INDEX).is_file():
            return Path(text)
        return super().convert(text)


class LevelOrAuto(Number):
    """A noise level in ``(low, high]``, or the word ``auto``."""

    name = "noise level or 'auto'"

    def convert(self, text: str) -> float | str:  # type: ignore[override]
        if text == "auto":
            return text
        return super().convert(text)


def _is_pipeline(model: Path | str) -> bool:
    return model != SHIPPED and (Path(model) / PIPELINE_INDEX).is_file()


def _launcher() -> tuple[int | None, int | None, int | None]:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets, or ``None`` each."""
    values: list[int | None] = []
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = os.environ.get(name)
        if text is None or text.strip() == "":
            values.append(None)
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise ValueError(
                f"the environment variable {name}={text!r} is not an integer; unset it, or launch with "
                "torchrun."
            ) from None
    rank, world, local = values
    if (rank is None) != (world is None):
        raise ValueError(
            "only one of the environment variables RANK and WORLD_SIZE is set; set both (torchrun does) "
            "or neither."
        )
    if world is not None and rank is not None and not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1 = 0..{world - 1}; launch with torchrun.")
    return rank, world, local


def check(args: argparse.Namespace) -> None:
    """The checks across flags (and of the launcher's environment), before anything is loaded."""
    from ..generate import budget_grid

    if args.teleport is not None and args.sigma_skip is None:
        raise ValueError("--teleport applies to a teleport; give --sigma-skip S too, or drop --teleport.")
    if args.sigma_skip == "auto" and args.teleport == "truncate":
        raise ValueError(
            "--sigma-skip auto chooses the level for --teleport respace (the budget stays --nfe); drop "
            "--teleport truncate, or give a numeric --sigma-skip."
        )
    _launcher()
    if args.warm_start is not None and getattr(args, "loaded_warm_start", None) is None:
        from ..sampling import load_statistics

        # Read (and checked) once, here: a foreign or damaged file is refused before the model loads.
        args.loaded_warm_start = load_statistics(args.warm_start)
    if _is_pipeline(args.model):
        if args.sigma_skip is not None and args.warm_start is None:
            raise ValueError(
                "a diffusers pipeline ships no statistics to teleport with; give --warm-start FILE "
                "(`gaussport fit` writes one), or drop --sigma-skip."
            )
        return  # its noise range is read from the pipeline's scheduler: the grid is checked on loading
    # The grid the run will use (a budget too small for one step of the solver is refused here).
    given = None if args.sigma_skip == "auto" else args.sigma_skip
    budget_grid(args.solver, args.nfe, sigma_skip=given, teleport=args.teleport or "respace")


def _device(args: argparse.Namespace, local_rank: int | None) -> Any:
    import torch

    device = args.device if args.device is not None else torch.device("cpu")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)  # one GPU per torchrun process
    return device


def _load_digits(model: Path | str, device: Any) -> tuple[Any, Any, tuple[int, ...], dict[str, float], str]:
    from ..digits import load_digits_denoiser, load_digits_gaussian

    directory = None if model == SHIPPED else model
    net = load_digits_denoiser(device=device, directory=directory)
    label = "the shipped digits model" if directory is None else f"the digits model in {directory}"
    return net, load_digits_gaussian(directory=directory), (1, 8, 8), {}, label


def _load_pipeline(path: Path, device: Any) -> tuple[Any, Any, tuple[int, ...], dict[str, float], str]:
    """An unconditional pixel-space diffusers pipeline: its UNet as a VE denoiser, the sample shape and
    the noise range of its training schedule. Weights are read from safetensors only (no pickles)."""
    import importlib

    from ..adapters.diffusers import DiffusersDenoiser

    try:
        index = json.loads((path / PIPELINE_INDEX).read_text())
        parts = {name: value[1] for name, value in index.items() if isinstance(value, list) and value[0]}
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path / PIPELINE_INDEX} is damaged ({exc}); save the pipeline again.") from exc
    other = sorted(set(parts) - {"unet", "scheduler"})
    if "unet" not in parts or "scheduler" not in parts or other:
        raise ValueError(
            f"{path} is a pipeline of {', '.join(sorted(parts))}: the command line samples unconditional "
            "pixel-space pipelines (a unet and a scheduler); for latents or prompts call "
            "gaussport.generate.sample_to_disk with the adapter's denoiser (docs/mass-sampling.md)."
        )
    diffusers = importlib.import_module("diffusers")
    unet = getattr(diffusers, parts["unet"]).from_pretrained(path, subfolder="unet", use_safetensors=True)
    scheduler = getattr(diffusers, parts["scheduler"]).from_pretrained(path, subfolder="scheduler")
    denoiser = DiffusersDenoiser(unet.to(device).eval().requires_grad_(False), scheduler)
    log_sigmas = getattr(denoiser.schedule, "log_sigmas", None)
    if log_sigmas is None:
        raise ValueError(f"{path}: a flow-matching pipeline; the command line samples DDPM-family ones.")
    size = unet.config.sample_size
    shape = (int(unet.config.in_channels), *((size, size) if isinstance(size, int) else size))
    grid_range = {"sigma_min": float(log_sigmas.min().exp()), "sigma_max": float(log_sigmas.max().exp())}
    return denoiser, None, shape, grid_range, f"the diffusers pipeline in {path}"


def run(args: argparse.Namespace) -> int:
    from ..generate import sample_to_disk

    check(args)
    rank, world, local = _launcher()
    device = _device(args, local)
    load = _load_pipeline if _is_pipeline(args.model) else _load_digits
    denoiser, gaussian, shape, grid_range, label = load(args.model, device)
    warm_start = args.loaded_warm_start if args.warm_start is not None else gaussian
    start = time.perf_counter()
    probes = None
    directory = None if args.model == SHIPPED else Path(args.model)
    if args.sigma_skip == "auto" and not _is_pipeline(args.model):
        from ..digits.files import TEST_SET_FILE
        from .probe import _training_split

        # A digits model is probed from its own training split (the surrogate is fitted to it) when
        # its test split tells which images that is; otherwise, like a pipeline, from its warm
        # start's marginal.
        if directory is None or (directory / TEST_SET_FILE).is_file():
            probes = _training_split(directory)
    result = sample_to_disk(
        denoiser,
        shape,
        args.out,
        count=args.count,
        solver=args.solver,
        nfe=args.nfe,
        warm_start=warm_start,
        sigma_skip=args.sigma_skip,
        teleport=args.teleport or "respace",
        probes=probes,
        seed=args.seed,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        formats=args.format,
        device=device,
        rank=rank,
        world_size=world,
        disable=args.quiet or None,
        **grid_range,
    )
    seconds = time.perf_counter() - start
    who = f" (rank {rank} of {world})" if world is not None and world > 1 else ""
    rate = f", {result.samples / seconds:.1f} samples/s" if result.samples else ""
    teleport, level = "", result.manifest["settings"]["sigma_skip"]
    if level is not None:
        teleport = f", teleport to {level:g}" + (" (auto)" if args.sigma_skip == "auto" else "")
    print(
        f"gaussport sample{who}: {label}, {args.solver} at NFE {result.nfe}{teleport}, seed {args.seed}: "
        f"{result.samples} samples in {len(result.written)} shard(s) written, {len(result.skipped)} "
        f"finished shard(s) skipped, into {args.out} in {seconds:.1f} s{rate}"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport sample`` and its flags."""
    from ..evaluation import SIGMA_MAX, SIGMA_MIN

    count = Integer(1)
    parser = subparsers.add_parser(
        "sample",
        help="draw many samples to disk (PNG folder and/or .npz shards), resumable, torchrun-ready",
        description="Draw --count samples of MODEL (digits: the shipped digits model, a directory "
        "written by `gaussport train-demo --out DIR`, or an unconditional pixel-space diffusers pipeline "
        f"folder) with --solver at --nfe evaluations (Karras grid {SIGMA_MAX:g} -> {SIGMA_MIN:g}; a "
        "pipeline's own noise range), optionally teleporting to --sigma-skip with the model's Gaussian "
        "(or --warm-start FILE), "
        "and write them into --out in shards of --shard-size: samples-KKKKK.npz (model space, float32, "
        "with indices and seeds) and/or png/IIIIII.png. Sample i starts from noise seeded by (--seed, i) "
        "alone, so the batch size, the number of processes and the device do not change which noise it "
        "gets. A second run with the same settings skips finished shards (resume); a folder of other "
        "settings is refused. Under torchrun (RANK, WORLD_SIZE) each process takes every WORLD_SIZE-th "
        "shard (and GPU LOCAL_RANK with --device cuda): `torchrun --nproc-per-node 4 -m gaussport.cli sample "
        "digits --out fid50k --count 50000 --device cuda` writes on the CPU the same files as one process.",
    )
    parser.add_argument(
        "model",
        type=ModelSource(),
        metavar="MODEL",
        help="'digits' (the shipped model), a directory `gaussport train-demo --out DIR` wrote, "
        "or an unconditional pixel-space diffusers pipeline folder (model_index.json; safetensors weights)",
    )
    parser.add_argument(
        "--warm-start",
        type=InputFile((".safetensors", ".npz"), "statistics"),
        metavar="FILE",
        help="the Gaussian to teleport with (a statistics file, `gaussport fit`); default the digits "
        "model's own; required with --sigma-skip for a diffusers pipeline",
    )
    parser.add_argument(
        "--out", type=Directory("output"), required=True, metavar="DIR", help="the output folder"
    )
    parser.add_argument("--count", type=count, required=True, metavar="N", help="number of samples")
    parser.add_argument(
        "--solver",
        type=SolverName(),
        default="dpmpp_2m",
        metavar="NAME",
        help="a registered solver (`gaussport solvers`; default dpmpp_2m)",
    )
    parser.add_argument(
        "--nfe",
        type=count,
        default=10,
        metavar="K",
        help="evaluation budget per sample (default 10; Heun-type solvers use the largest 2n-1 <= K)",
    )
    parser.add_argument(
        "--sigma-skip",
        type=LevelOrAuto(SIGMA_MIN, SIGMA_MAX),
        metavar="S",
        help="teleport to this noise level with the model's Gaussian (default: no teleport), or auto: "
        "the level gaussport.tuning.auto_sigma_skip picks for --solver at --nfe (the digits model is "
        "probed from its training split, a pipeline from its --warm-start's marginal; 192 model "
        "evaluations, cached; docs/auto-level.md)",
    )
    parser.add_argument(
        "--teleport",
        choices=("respace", "truncate"),
        help="with --sigma-skip: respace (default; the same NFE below it) or truncate (the grid below it)",
    )
    parser.add_argument(
        "--seed",
        type=Integer(0, 2**64 - 1),
        default=0,
        metavar="S",
        help="the run's seed (default 0); sample i's noise is seeded by (seed, i) alone",
    )
    parser.add_argument(
        "--batch-size", type=count, default=64, metavar="B", help="samples per model call (default 64)"
    )
    parser.add_argument(
        "--shard-size",
        type=count,
        default=1000,
        metavar="K",
        help="samples per shard, the unit of resume and of the split over processes (default 1000)",
    )
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        default="png,npz",
        metavar="{png,npz|png|npz}",
        help="png (a flat folder of PNGs), npz (shards of float32 samples) or both (default png,npz)",
    )
    add_model_run_flags(parser, threads=False)
    parser.set_defaults(func=run, check=check)
    return parser
