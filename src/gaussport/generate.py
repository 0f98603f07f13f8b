"""Mass sampling to disk: many samples, resumable, split over processes, bit for bit reproducible.

:func:`sample_to_disk` draws ``count`` samples of a denoiser with any registered solver (and, with
``sigma_skip``, the analytic warm start) and writes them into a folder, in **shards**: shard ``k``
holds samples ``[k * shard_size, (k + 1) * shard_size)``. It is built for the 50,000-sample runs of
a Frechet inception distance:

* **Seeds per sample.** Sample ``i`` starts from ``sigma_max * z_i``, with ``z_i`` drawn on the CPU
  by its own ``torch.Generator`` seeded with :func:`sample_seed` ``(seed, i)`` and then moved to the
  device, so the initial noise of sample ``i`` depends on ``(seed, i)`` only -- not on the batch
  size, the number of processes or the device.
* **Processes.** Shards are dealt round-robin: the process of rank ``r`` out of ``w`` computes the
  shards ``k`` with ``k % w == r`` (``rank``/``world_size`` from ``torch.distributed`` when it is
  initialised, or given). A batch never crosses a shard boundary, so every shard is computed by the
  same batches however many processes share the work: on the CPU a ``torchrun`` launch and a single
  process write the same files bit for bit.
* **Batch size.** The noise and every solver operation are per sample, so the batch size changes
  a sample only through the model: networks whose kernels depend on the batch (convolutions and
  matrix products on the CPU do) differ in the last bits (7e-7 for the digits U-Net); models
  computed per sample (an analytic Gaussian with a diagonal covariance) are bit for bit equal.
* **Files.** Each shard is written atomically (:func:`gaussport._files.atomic_writer`): an ``.npz``
  (``samples-00000.npz``: the samples in model space, float32, their indices and seeds) and/or one
  PNG per sample named by its index (``png/000000.png``, one flat folder as FID tools read it).
  Each file carries the digest of the settings (npz metadata, PNG text chunk ``gaussport``).
* **Resume.** A shard whose files are present, readable and of these settings is skipped; a
  missing or damaged one is computed again. ``manifest.json`` records the settings (model and warm
  start fingerprints, solver, grid, seed, count, shard size, shape) and the gaussport version; a
  folder holding another run's manifest is refused with an error that names the differing settings
  (write into a new folder, or run with the same settings to resume it). The batch size, the
  formats and the gaussport version are recorded but not compared: resuming with another batch
  size or on another machine is allowed (see "Batch size" for what it changes).

:func:`load_samples` reads the shards back in index order.

Cost: the model calls of the solver per sample (``nfe``), plus the PNG encoding; memory is one
batch and one shard of samples (on the CPU).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import __version__
from . import grids as _grids
from ._checks import as_grid
from ._files import Array, atomic_writer, read_npz, write_npz
from .denoiser import model_device
from .evaluation.endpoints import fingerprint as _module_fingerprint
from .evaluation.harness import SIGMA_MAX, SIGMA_MIN, Evaluator
from .sampling import load_warm_start, resolve_solver, sample, solve, with_warm_start_statistics
from .solvers import Solver

__all__ = [
    "sample_to_disk",
    "load_samples",
    "budget_grid",
    "sample_seed",
    "default_to_pixels",
    "SampleRun",
    "FORMATS",
    "MANIFEST",
]

logger = logging.getLogger("gaussport")

FORMATS = ("npz", "png")
MANIFEST = "manifest.json"
SHARD_FORMAT = "gaussport.samples"
FORMAT_VERSION = 1
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 <= seed < 2**64
PNG_DIR = "png"
PNG_KEY = "gaussport"  # the PNG text chunk holding the settings digest
PNG_THREADS = 8
_COMPARED_NOTE = "write into a new folder, or run with the same settings to resume this one"


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample ``index`` of a run with ``seed``: 64 bits of NumPy's ``SeedSequence``.

    ``SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1, uint64)[0]``: a hash of
    ``(seed, index)`` (NumPy's stable seeding algorithm), so runs with different ``seed`` share no
    sample (``seed + index`` would make run 1 the shifted run 0) and neighbouring indices are
    unrelated streams. Cost O(1), about 10 us.
    """
    return int(np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


def _noise(seed: int, indices: range, shape: tuple[int, ...]) -> Tensor:
    """``z_i`` for ``i`` in ``indices``, one CPU generator per sample (float32, ``[n, *shape]``)."""
    rows = [
        torch.randn(shape, generator=torch.Generator().manual_seed(sample_seed(seed, i)), dtype=torch.float32)
        for i in indices
    ]
    return torch.stack(rows)


def default_to_pixels(x: Tensor) -> Tensor:
    """Model space ``[-1, 1]`` (EDM, diffusers) to 8-bit pixels: ``round((x + 1) * 127.5)`` clamped."""
    return ((x.to(torch.float32) + 1.0) * 127.5).round().clamp(0.0, 255.0).to(torch.uint8)


@dataclass(frozen=True)
class SampleRun:
    """What :func:`sample_to_disk` did in this process.

    Attributes:
        out_dir: the folder.
        manifest: the manifest's content (settings and run information).
        shards: the shard indices this process was responsible for.
        written: the shards it computed and wrote.
        skipped: the shards it found finished and skipped.
        samples: the number of samples it computed.
        seconds: wall time of the whole call.
        nfe: denoiser evaluations per sample.
    """

    out_dir: Path
    manifest: dict[str, Any]
    shards: tuple[int, ...]
    written: tuple[int, ...]
    skipped: tuple[int, ...]
    samples: int
    seconds: float
    nfe: int


# ---------------------------------------------------------------------- checks
def _integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, Tensor) and value.ndim == 0 and not value.dtype.is_floating_point:
            value = int(value.item())
        else:
            raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}.")
    out = int(value)
    if out < minimum or (maximum is not None and out > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be at least {minimum}{upper}; got {out}.")
    return out


def _shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise TypeError(f"shape must be a sequence of positive integers such as (3, 32, 32); got {shape!r}.")
    out = tuple(_integer(f"shape[{k}]", s, 1) for k, s in enumerate(shape))
    if not out:
        raise ValueError("shape is empty; give the shape of one sample, e.g. (3, 32, 32).")
    return out


def _formats(formats: object) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(","))
    if not isinstance(formats, (tuple, list)) or not formats:
        raise TypeError(f"formats must be a non-empty tuple of {FORMATS}; got {formats!r}.")
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"unknown format {f!r}; give formats from {FORMATS}.")
    return tuple(f for f in FORMATS if f in formats)


def _png_mode(shape: tuple[int, ...]) -> str | None:
    """The PIL mode of pixels of ``shape`` (``[C, H, W]`` or ``[H, W]``), or ``None``."""
    if len(shape) == 2:
        return "L"
    if len(shape) == 3:
        return {1: "L", 3: "RGB", 4: "RGBA"}.get(shape[0])
    return None


def _rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's rank and the number of processes: given, or from ``torch.distributed``."""
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"give both rank and world_size or neither; got rank={rank!r}, world_size={world_size!r}."
        )
    if rank is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    world = _integer("world_size", world_size, 1)
    return _integer("rank", rank, 0, world - 1), world


def _describe(obj: Any) -> str:
    """A fingerprint of a model or warm start for the manifest: a SHA-256 of its contents where known."""
    if obj is None:
        return "none"
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    found = _module_fingerprint(obj)
    if found is not None:
        return f"{kind}:sha256:{found}"
    mean = getattr(obj, "mean", None)
    if isinstance(mean, Tensor):  # a Gaussian: its mean and its representation (O(d) to hash)
        digest = hashlib.sha256(mean.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
        return f"{kind}:{getattr(obj, 'representation', '?')}:mean-sha256:{digest.hexdigest()}"
    return kind


# ---------------------------------------------------------------------- the run
def sample_to_disk(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    count: int,
    solver: Solver | str = "dpmpp_2m",
    nfe: int | None = None,
    sigmas: Sequence[float] | Tensor | None = None,
    warm_start: Any = None,
    sigma_skip: float | str | None = None,
    teleport: str = "respace",
    probes: Any = None,
    seed: int = 0,
    batch_size: int = 64,
    shard_size: int = 1000,
    formats: Sequence[str] | str = ("png", "npz"),
    to_pixels: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    model_id: str | None = None,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    solver_options: Mapping[str, Any] | None = None,
    disable: bool | None = None,
) -> SampleRun:
    """Draw ``count`` samples of ``denoiser`` into ``out_dir`` in resumable shards (module docstring).

    Every argument is checked, and an existing manifest compared, before anything is computed or
    written.

    Args:
        denoiser: ``D(x, sigma) -> x0`` (VE), already on ``device``.
        shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        out_dir: the folder (created if needed); may hold an earlier run of the same settings.
        count: the number of samples.
        solver: a registered solver name or instance.
        nfe: an evaluation budget: the largest Karras grid (rho 7) from ``sigma_max`` to
            ``sigma_min`` the solver runs within it (the harness's rule,
            :meth:`gaussport.evaluation.Evaluator.budget`, teleport included). Give ``nfe`` or
            ``sigmas``.
        sigmas: an explicit grid instead of ``nfe``.
        warm_start: the Gaussian to teleport with (needs ``sigma_skip``), or the path of its
            statistics file; also gives DPM-Solver-v3 its analytic EMS without a teleport.
        sigma_skip: the teleport level; ``None``: no teleport; ``"auto"``: the level
            :func:`gaussport.tuning.auto.auto_sigma_skip` picks for the solver and the ``nfe`` grid
            (``teleport="respace"`` only; chosen once, before the first shard, and written into the
            manifest as ``sigma_skip`` with ``sigma_skip_rule: "auto"``).
        teleport: ``"respace"`` or ``"truncate"`` (:func:`gaussport.sample`).
        probes: with ``sigma_skip="auto"``: a :class:`gaussport.tuning.probes.ProbeRecord`, the path
            of one, or training data to probe from (as in :func:`gaussport.sample`).
        seed: the run's seed, ``0 <= seed < 2**64``; sample ``i`` uses :func:`sample_seed` ``(seed, i)``.
        batch_size: samples per model call (at most ``shard_size`` are used).
        shard_size: samples per shard (the unit of resuming and of the split over processes).
        formats: ``"npz"`` and/or ``"png"`` (a tuple, or a comma-separated string).
        to_pixels: ``samples [B, *shape] -> uint8 [B, C, H, W] or [B, H, W]`` for the PNGs (C = 1,
            3 or 4); default :func:`default_to_pixels` (model space ``[-1, 1]``). For latents pass
            the decoder.
        device: where the noise goes; default the device of the denoiser's parameters, else CPU.
        rank: this process's rank (with ``world_size``); default ``torch.distributed``'s, else 0.
        world_size: the number of processes sharing the shards; default ``torch.distributed``'s, else 1.
        model_id: what the manifest names the model by; default its type and a SHA-256 of its state
            dict (so a retrained model is another model; seconds for a network of gigabytes).
        sigma_min: the smallest positive level of the ``nfe`` grid.
        sigma_max: the first level of the ``nfe`` grid (the noise is ``sigma_max * z``).
        solver_options: options of a solver given by name (``{"solver_order": 3}``).
        disable: hide the progress bar (``None``: tqdm's default on rank 0, hidden elsewhere).

    Returns:
        A :class:`SampleRun` (shards written and skipped, samples, seconds).

    Raises:
        ValueError, TypeError: bad arguments, or ``out_dir`` holds a run of other settings.
        FloatingPointError: a sample is not finite (nothing of its shard is written).
    """
    start = time.perf_counter()
    shape = _shape(shape)
    count = _integer("count", count, 1)
    seed = _integer("seed", seed, 0, SEED_LIMIT - 1)
    batch_size = _integer("batch_size", batch_size, 1)
    shard_size = _integer("shard_size", shard_size, 1)
    formats = _formats(formats)
    rank, world_size = _rank(rank, world_size)
    if "png" in formats and to_pixels is None and _png_mode(shape) is None:
        raise ValueError(
            f"samples of shape {shape} are no image for PNG; give formats=('npz',), or to_pixels that "
            "turns them into [C, H, W] pixels (C = 1, 3 or 4), e.g. a VAE decoder."
        )
    if to_pixels is not None and not callable(to_pixels):
        raise TypeError(f"to_pixels must be a function of the samples; got {type(to_pixels).__name__}.")
    options = dict(solver_options or {})
    solver_obj = resolve_solver(solver, options)
    solver_name = solver if isinstance(solver, str) else type(solver_obj).__name__
    if sigma_skip is not None and warm_start is None:
        raise ValueError("sigma_skip was given without warm_start; pass the Gaussian to teleport with.")
    auto = isinstance(sigma_skip, str)
    if probes is not None and not auto:
        raise ValueError("probes= is only used with sigma_skip='auto'; drop it or pass sigma_skip='auto'.")
    warm_start = load_warm_start(warm_start)  # a statistics file is read once, not once per batch
    device = _device(denoiser, device)
    if auto:
        sigma_skip = _auto_level(
            denoiser,
            warm_start,
            solver_obj,
            sigma_skip,
            teleport,
            probes,
            device,
            nfe,
            sigmas,
            sigma_min,
            sigma_max,
        )
    elif sigma_skip is not None:
        sigma_skip = float(sigma_skip)  # 2 and 2.0 are the same settings in the manifest
    grid, solver_grid, used = budget_grid(
        solver_obj,
        nfe,
        sigmas,
        sigma_skip=sigma_skip,
        teleport=teleport,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
    )
    settings = {
        "model": model_id if model_id is not None else _describe(denoiser),
        "warm_start": _describe(warm_start) if warm_start is not None else "none",
        "shape": list(shape),
        "solver": solver_name,
        "solver_repr": repr(solver_obj),
        "grid": list(grid),
        "solver_grid": list(solver_grid),
        "nfe": used,
        "sigma_skip": sigma_skip,
        "teleport": teleport if sigma_skip is not None else "none",
        "seed": seed,
        "seeding": "numpy SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(1, uint64)[0]",
        "count": count,
        "shard_size": shard_size,
        "dtype": "float32",
    }
    if auto:  # only then: the manifests of runs with a given level keep their settings (resume)
        settings["sigma_skip_rule"] = "auto"
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    out = Path(out_dir)
    _check_manifest(out, settings)
    manifest = {
        "format": SHARD_FORMAT,
        "version": FORMAT_VERSION,
        "gaussport": __version__,
        "key": key,
        "settings": settings,
        "batch_size": batch_size,
        "formats": list(formats),
        "world_size": world_size,
    }
    shards = tuple(range(rank, math.ceil(count / shard_size), world_size))
    width = max(6, len(str(count - 1)))
    todo, skipped = [], []
    for k in shards:
        lo, hi = k * shard_size, min(count, (k + 1) * shard_size)
        (skipped if _finished(out, k, range(lo, hi), shape, formats, key, width) else todo).append(k)
    if skipped:
        logger.info("gaussport sample: %d finished shard(s) in %s skipped", len(skipped), out)
    pending = sum(min(count, (k + 1) * shard_size) - k * shard_size for k in todo)
    hide = disable if disable is not None else (True if rank != 0 else None)  # None: tqdm's default
    run = _Runner(denoiser, solver_obj, grid, solver_grid, warm_start, sigma_skip, teleport, device)
    convert = to_pixels or default_to_pixels
    # One shard is written in a background thread while the next is computed: a file costs an
    # fsync (about 1 ms here), so the PNGs of a 50k-sample run would otherwise add a minute of
    # idle device time. The conversion to pixels (a decoder, maybe on the GPU) stays on this thread.
    with (
        tqdm(total=pending, disable=hide, desc="gaussport sample", unit="sample") as bar,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaussport-writer") as writer,
    ):
        writing: Future[None] | None = None
        for k in todo:
            indices = range(k * shard_size, min(count, (k + 1) * shard_size))
            parts = []
            for b in range(indices.start, indices.stop, batch_size):
                batch = range(b, min(indices.stop, b + batch_size))
                parts.append(run(_noise(seed, batch, shape)))
                bar.update(len(batch))
            samples = torch.cat(parts)
            pixels = _pixels(convert, samples) if "png" in formats else None
            if writing is not None:
                writing.result()  # the previous shard's write error, if any, stops the run here
            else:
                # Nothing is written before the first shard is computed: a model or warm start that
                # fails on the first batch leaves no folder behind, so a corrected run starts afresh.
                _prepare(out, manifest, formats)
            writing = writer.submit(
                _write, out, k, indices, samples, pixels, formats, seed, key, batch_size, width
            )
        if writing is not None:
            writing.result()
        else:
            _prepare(out, manifest, formats)
    return SampleRun(
        out, manifest, shards, tuple(todo), tuple(skipped), pending, time.perf_counter() - start, used
    )


def _prepare(out: Path, manifest: dict[str, Any], formats: tuple[str, ...]) -> None:
    """The folder, its ``png/`` and the manifest (unless there: every process writes the same)."""
    out.mkdir(parents=True, exist_ok=True)
    if "png" in formats:
        (out / PNG_DIR).mkdir(exist_ok=True)
    if not (out / MANIFEST).exists():
        # Every process writes the same settings; the rename makes concurrent writes harmless.
        with atomic_writer(out / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)


def budget_grid(
    solver: Solver | str,
    nfe: int | None = None,
    sigmas: Sequence[float] | Tensor | None = None,
    *,
    sigma_skip: float | None = None,
    teleport: str = "respace",
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """``(grid, solver grid, evaluations per sample)`` of a run, from ``nfe`` or ``sigmas``; no model needed.

    With ``nfe``: the largest Karras grid (rho 7) over ``[sigma_min, sigma_max]`` on which the
    solver, after a teleport to ``sigma_skip`` if given, makes at most ``nfe`` evaluations (the
    evaluation harness's rule, :meth:`gaussport.evaluation.Evaluator.budget`). With ``sigmas``:
    that grid, re-spaced or truncated below ``sigma_skip``. The solver grid is what the solver
    integrates (the grid itself without a teleport).

    Raises:
        ValueError: neither or both of ``nfe`` and ``sigmas``, a budget too small for one step, an
            unknown ``teleport``, ``sigma_skip`` outside the grid.
    """
    solver_obj = resolve_solver(solver, {}) if isinstance(solver, str) else solver
    if teleport not in ("respace", "truncate"):
        raise ValueError(f"teleport must be 'respace' or 'truncate'; got {teleport!r}.")
    if (nfe is None) == (sigmas is None):
        raise ValueError(f"give exactly one of nfe and sigmas; got nfe={nfe!r}, sigmas={sigmas!r}.")
    if nfe is not None:
        nfe = _integer("nfe", nfe, 1)
        # The harness's NFE -> grid rule, the one place of it: the evaluator only holds the grid
        # family and range here (no model, no seeds are used).
        holder = Evaluator(
            _identity, None, shape=(1,), seeds=(0,), sigma_min=sigma_min, sigma_max=sigma_max, fingerprint=""
        )
        budget = holder.budget(solver_obj, nfe, "none" if sigma_skip is None else teleport, sigma_skip)
        return tuple(budget.grid), tuple(budget.solver_grid), int(budget.nfe)
    grid = as_grid(sigmas)
    below = grid
    if sigma_skip is not None:
        skip = float(sigma_skip)
        if not grid[-1] < skip <= grid[0]:
            raise ValueError(f"sigma_skip = {skip} must lie in ({grid[-1]}, {grid[0]}]; pick a level inside.")
        below = _grids.respace(grid, skip) if teleport == "respace" else _grids.truncate(grid, skip)
    return tuple(grid), tuple(below), int(solver_obj.evaluations(below))


def _auto_level(
    denoiser: Any,
    warm_start: Any,
    solver: Solver,
    rule: str,
    teleport: str,
    probes: Any,
    device: torch.device,
    nfe: int | None,
    sigmas: Sequence[float] | Tensor | None,
    sigma_min: float,
    sigma_max: float,
) -> float:
    """``sigma_skip="auto"`` of :func:`sample_to_disk`: the level for the run's grid, chosen once."""
    from .sampling import _auto_level as sample_auto_level

    if rule != "auto":
        raise ValueError(f"sigma_skip must be a noise level, None or 'auto'; got {rule!r}.")
    if teleport != "respace":
        raise ValueError(
            "sigma_skip='auto' chooses the level for teleport='respace' (the budget stays the NFE); "
            "a truncated grid's budget depends on the level: pass teleport='respace', or a numeric "
            "sigma_skip with 'truncate'."
        )
    grid, _, _ = budget_grid(solver, nfe, sigmas, sigma_min=sigma_min, sigma_max=sigma_max)
    level = sample_auto_level(denoiser, warm_start, as_grid(grid), solver, teleport, probes, device, {})
    logger.info("gaussport sample: sigma_skip='auto' chose %g", level)
    return float(level)


def _identity(x: Tensor, sigma: Tensor) -> Tensor:
    return x


def _device(denoiser: Any, device: torch.device | str | None) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {device!r} is not a torch device; give e.g. 'cpu' or 'cuda'.") from exc
    return model_device(denoiser)


class _Runner:
    """One batch of noise ``z`` (CPU) -> samples (CPU, float32): moved to the device, then sampled."""

    def __init__(
        self,
        denoiser: Any,
        solver: Solver,
        grid: tuple[float, ...],
        solver_grid: tuple[float, ...],
        warm_start: Any,
        sigma_skip: float | None,
        teleport: str,
        device: torch.device,
    ) -> None:
        self.denoiser, self.grid, self.warm_start = denoiser, grid, warm_start
        self.sigma_skip, self.teleport, self.device = sigma_skip, teleport, device
        # A statistics solver (DPM-Solver-v3) gets the warm start's analytic EMS over the grid it
        # integrates once for the run, not once per batch (sample() would build it on every call),
        # and also without a teleport, as in the evaluation harness.
        self.solver = (
            solver if warm_start is None else with_warm_start_statistics(solver, warm_start, solver_grid)
        )

    def __call__(self, z: Tensor) -> Tensor:
        x = (self.grid[0] * z).to(self.device)  # scaled on the CPU: the same x on every device
        with torch.no_grad():
            if self.sigma_skip is None:
                result = solve(self.denoiser, x, self.grid, self.solver, disable=True)
            else:
                result = sample(
                    self.denoiser,
                    x,
                    self.grid,
                    self.solver,
                    warm_start=self.warm_start,
                    sigma_skip=self.sigma_skip,
                    teleport=self.teleport,
                    disable=True,
                )
        return result.x.to("cpu", torch.float32)


# ---------------------------------------------------------------------- files
def _shard_path(out: Path, k: int) -> Path:
    return out / f"samples-{k:05d}.npz"


def _png_path(out: Path, i: int, width: int) -> Path:
    return out / PNG_DIR / f"{i:0{width}d}.png"


def _write_shard(
    out: Path, k: int, indices: range, samples: Tensor, seed: int, key: str, batch_size: int
) -> None:
    seeds = np.array([sample_seed(seed, i) for i in indices], dtype=np.uint64)
    write_npz(
        _shard_path(out, k),
        SHARD_FORMAT,
        FORMAT_VERSION,
        {"key": key, "shard": k, "start": indices.start, "stop": indices.stop, "batch_size": batch_size},
        {
            "samples": samples.numpy(),
            "indices": np.arange(indices.start, indices.stop, dtype=np.int64),
            "seeds": seeds,
        },
    )


def _read_shard(path: Path, key: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta, arrays = read_npz(
        path,
        SHARD_FORMAT,
        FORMAT_VERSION,
        what="samples shard",
        arrays={
            "samples": Array("f"),
            "indices": Array("iu", ndim=1, nonnegative=True),
            "seeds": Array("u", ndim=1),
        },
        fields={"key": (str,), "shard": (int,), "start": (int,), "stop": (int,)},
        hint="; gaussport.generate.sample_to_disk writes these",
    )
    return meta, arrays


def _finished(
    out: Path, k: int, indices: range, shape: tuple[int, ...], formats: tuple[str, ...], key: str, width: int
) -> bool:
    """Whether shard ``k`` is on disk, whole and of these settings, in every format asked for."""
    if "npz" in formats:
        path = _shard_path(out, k)
        if not path.is_file():
            return False
        try:
            meta, arrays = _read_shard(path)
        except ValueError as exc:
            logger.warning("gaussport sample: %s is damaged (%s); computing it again", path, exc)
            return False
        whole = (
            meta["key"] == key
            and arrays["samples"].shape == (len(indices), *shape)
            and np.array_equal(arrays["indices"], np.arange(indices.start, indices.stop))
        )
        if not whole:
            logger.warning("gaussport sample: %s is not this run's shard %d; computing it again", path, k)
            return False
    if "png" in formats:
        from PIL import Image

        for i in indices:
            path = _png_path(out, i, width)
            try:
                with Image.open(path) as image:
                    image.load()  # decodes the whole file: a truncated PNG fails here
                    if image.text.get(PNG_KEY) != key:
                        return False
            except FileNotFoundError:
                return False
            except Exception as exc:  # noqa: BLE001 - any decoding failure means: write it again
                logger.warning("gaussport sample: %s is damaged (%s); computing its shard again", path, exc)
                return False
    return True


def _pixels(to_pixels: Callable[[Tensor], Tensor], samples: Tensor) -> Tensor:
    """``to_pixels(samples)`` on the CPU, checked: uint8, ``[B, C, H, W]`` (C = 1, 3, 4) or ``[B, H, W]``."""
    pixels = to_pixels(samples)
    if not isinstance(pixels, Tensor) or pixels.dtype != torch.uint8:
        raise TypeError(
            f"to_pixels must return a uint8 tensor; got {getattr(pixels, 'dtype', type(pixels).__name__)} "
            "(round, clamp to [0, 255] and .to(torch.uint8))."
        )
    if pixels.shape[0] != samples.shape[0] or _png_mode(tuple(pixels.shape[1:])) is None:
        raise ValueError(
            f"to_pixels returned shape {tuple(pixels.shape)} for {samples.shape[0]} samples; return "
            "[B, C, H, W] (C = 1, 3 or 4) or [B, H, W]."
        )
    return pixels.cpu()


def _write(
    out: Path,
    k: int,
    indices: range,
    samples: Tensor,
    pixels: Tensor | None,
    formats: tuple[str, ...],
    seed: int,
    key: str,
    batch_size: int,
    width: int,
) -> None:
    """Shard ``k``'s files: the PNGs first, then the ``.npz``."""
    if pixels is not None:
        _write_pngs(out, indices, pixels, key, width)
    if "npz" in formats:
        _write_shard(out, k, indices, samples, seed, key, batch_size)


def _write_pngs(out: Path, indices: range, pixels: Tensor, key: str, width: int) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, key)

    def write(i: int, p: Tensor) -> None:
        array = p.numpy()
        if array.ndim == 3:
            array = array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", pnginfo=info)
        with atomic_writer(_png_path(out, i, width)) as f:
            f.write(buffer.getvalue())

    # Several files at a time: each waits for its fsync, which releases the GIL.
    with ThreadPoolExecutor(max_workers=PNG_THREADS, thread_name_prefix="gaussport-png") as pool:
        for done in [pool.submit(write, i, p) for i, p in zip(indices, pixels, strict=True)]:
            done.result()


def _check_manifest(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a folder that is a file, or holds a manifest of other settings (naming them)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{os.fspath(out)!r} is a file; give a directory for the samples.")
    path = out / MANIFEST
    if not path.exists():
        return
    try:
        found = json.loads(path.read_text())
        theirs = found["settings"]
        if found.get("format") != SHARD_FORMAT or not isinstance(theirs, dict):
            raise ValueError("not a gaussport samples manifest")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} is no gaussport samples manifest ({exc}); give a new folder, or remove "
            "the file if the folder holds nothing of value."
        ) from exc
    if found.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {found['version']}; this gaussport reads up to "
            f"{FORMAT_VERSION}. Upgrade gaussport or write into a new folder."
        )
    # Scalars first: "nfe: 4 there, 5 here" tells more than the grids that follow from it.
    names = sorted(set(settings) | set(theirs), key=lambda n: (isinstance(settings.get(n), list), n))
    differ = [name for name in names if settings.get(name) != theirs.get(name)]
    if differ:
        shown = "; ".join(
            f"{name}: {_short(theirs.get(name))} there, {_short(settings.get(name))} here"
            for name in differ[:4]
        )
        raise ValueError(f"{os.fspath(out)!r} holds samples of other settings ({shown}); {_COMPARED_NOTE}.")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_samples(out_dir: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """The samples of a finished run (its ``.npz`` shards) in index order, with their indices.

    Returns:
        ``(samples [count, *shape] float32, indices [count] int64)``.

    Raises:
        FileNotFoundError: no manifest in ``out_dir``.
        ValueError: a shard is missing or damaged (run :func:`sample_to_disk` again: it resumes),
            or the run wrote no ``.npz`` shards.
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{os.fspath(path)!r} does not exist; give a folder sample_to_disk wrote.")
    try:
        manifest = json.loads(path.read_text())
        settings, key, formats = manifest["settings"], manifest["key"], manifest["formats"]
        count, size = int(settings["count"]), int(settings["shard_size"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} is no gaussport samples manifest ({type(exc).__name__}: {exc}); give a "
            "folder sample_to_disk wrote."
        ) from exc
    if "npz" not in formats:
        raise ValueError(f"{os.fspath(out)!r} holds PNGs only; load them as images, or sample with 'npz'.")
    samples, indices = [], []
    for k in range(math.ceil(count / size)):
        shard = _shard_path(out, k)
        if not shard.is_file():
            raise ValueError(f"{os.fspath(shard)!r} is missing; run sample_to_disk again to finish the run.")
        meta, arrays = _read_shard(shard)
        if meta["key"] != key:
            raise ValueError(f"{os.fspath(shard)!r} belongs to another run; run sample_to_disk again.")
        samples.append(torch.from_numpy(arrays["samples"]))
        indices.append(torch.from_numpy(arrays["indices"].astype(np.int64)))
    return torch.cat(samples), torch.cat(indices)
