"""Sampling: :func:`solve` (a solver over a grid) and :func:`sample` (the analytic warm start, then a solver).

This is the layer that knows both the solvers and the analytic models (docs/architecture.md): it
resolves solver names, validates input once, teleports with the warm-start Gaussian, gives
statistics-based solvers the Gaussian's analytic EMS (:func:`with_warm_start_statistics`, the one
place of that rule), reads a warm start given as a statistics file (:func:`load_warm_start`, the
one place of that rule too: the adapters call it), and runs the step loop of :mod:`gaussport.loop`.
:func:`gaussport.inversion.invert` runs the ODE upwards (data to noise) with the same rules.

Vocabulary (one name per concept): the *warm start* is the model that teleports (normally a
:class:`gaussport.analytic.Gaussian` fitted to the data); the *teleport* is its exact flow from the
grid's first level to ``sigma_skip``; the ``teleport=`` mode says what the solver integrates below
``sigma_skip`` (``"truncate"``, ``"respace"`` or a grid family).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import _deprecation
from . import grids as _grids
from ._checks import Grid, as_grid, check_state, noise_level, state_dtype
from ._warm_statistics import with_warm_start_statistics
from .analytic import Gaussian
from .denoiser import Denoiser, DenoiserCall, check_output
from .loop import Callback, StepInfo, Teleport, finish, integrate
from .solvers import Solver
from .solvers import get as get_solver

__all__ = [
    "solve",
    "sample",
    "Solution",
    "StepInfo",
    "Callback",
    "TELEPORT_MODES",
    "resolve_solver",
    "with_warm_start_statistics",
    "StatisticsCache",
    "load_statistics",
    "load_warm_start",
]

logger = logging.getLogger("gaussport")

TELEPORT_MODES = ("truncate", "respace")
"""What the solver integrates below ``sigma_skip`` (a :class:`gaussport.grids.GridFamily` also works)."""


@dataclass(frozen=True, slots=True)
class Solution:
    """The result of :func:`solve` or :func:`sample`.

    Attributes:
        x: the final state, in the dtype of the input ``x``.
        nfe: denoiser evaluations actually made.
        sigmas: the grid the solver integrated (for a warm start: from the teleport level down).
        state: the solver state after the last step; pass it as ``state=`` to continue a run.
        teleport: ``(sigma_from, sigma_to)`` of the analytic warm start, or ``None``.
    """

    x: Tensor
    nfe: int
    sigmas: Grid
    state: Any = None
    teleport: tuple[float, float] | None = None


def resolve_solver(solver: Solver | str, options: dict[str, Any]) -> Solver:
    """The solver instance for a registered name and options, or the instance itself (no options).

    Raises:
        ValueError: for an unknown name. TypeError: for options with an instance, or a wrong type.
    """
    if isinstance(solver, str):
        return get_solver(solver, **options)
    if isinstance(solver, Solver):
        if options:
            raise TypeError(
                f"solver options {sorted(options)} can only be given with a solver name; "
                "build the solver instance with them instead."
            )
        return solver
    raise TypeError(f"solver must be a registered name or a Solver instance; got {type(solver).__name__}.")


class StatisticsCache:
    """Statistics files already read, by ``(real path, mtime, size)``; owned by whoever reuses it.

    A caller that passes the same path for every image reads it once, and a rewritten file is
    read again. At most ``size`` files are kept (oldest out first). Thread-safe. Each k-diffusion
    sampler owns one; :func:`sample`, ``invert`` and ``edm_sample`` read a path on every call (no
    cache behind the caller's back: a dense statistics file of d = 4096 takes 0.7 s to read).
    """

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1; got {size}.")
        self.size = size
        self._files: dict[tuple[str, int, int], Gaussian] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> Gaussian | None:
        with self._lock:
            return self._files.get(key)

    def put(self, key: tuple[str, int, int], gaussian: Gaussian) -> None:
        with self._lock:
            if key not in self._files and len(self._files) >= self.size:
                self._files.pop(next(iter(self._files)))
            self._files[key] = gaussian


def load_statistics(path: str | os.PathLike[str], cache: StatisticsCache | None = None) -> Gaussian:
    """The Gaussian stored at ``path`` (written by ``Gaussian.save``); never unpickles.

    With ``cache``, a file already read (same real path, modification time and size) is not read
    again.

    Raises:
        FileNotFoundError: if ``path`` does not exist (the message says how to create it).
        ValueError: if the file is not a gaussport statistics file.
    """
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"warm-start statistics file {os.fspath(path)!r} does not exist; create it with "
            "gaussport.analytic.Gaussian.fit(data).save(path) (latent models: "
            "gaussport.adapters.diffusers.fit_latent_gaussian(vae, images).save(path))."
        ) from None
    key = (real, st.st_mtime_ns, st.st_size)
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        return cached
    gaussian = Gaussian.load(real)
    if cache is not None:
        cache.put(key, gaussian)
    return gaussian


def load_warm_start(warm_start: Any, cache: StatisticsCache | None = None) -> Any:
    """The warm start itself, or the :class:`~gaussport.analytic.Gaussian` a statistics path names.

    The one rule for ``warm_start=`` everywhere (:func:`sample`, ``invert``, every adapter): a
    ``str`` or ``os.PathLike`` is a file written by ``Gaussian.save``, read with
    :func:`load_statistics` through ``cache``; anything else (a Gaussian, an object with ``flow``,
    ``None``) is returned unchanged; a class (``Gaussian`` instead of a Gaussian) raises a TypeError.
    """
    if isinstance(warm_start, (str, os.PathLike)):
        return load_statistics(warm_start, cache)
    if isinstance(warm_start, type):  # Gaussian itself: its flow is a function, callable but unbound
        raise TypeError(
            f"warm_start is the class {warm_start.__name__}, not an instance; pass a fitted one, e.g. "
            "Gaussian.load(path) or Gaussian.fit(data)."
        )
    return warm_start


def solve(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    solver: Solver | str = "heun",
    *,
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype | None = None,
    model_dtype: torch.dtype | None = None,
    state: Any = None,
    check_finite: bool = True,
    enable_grad: bool = False,
    **options: Any,
) -> Solution:
    """Integrate the probability-flow ODE from ``sigmas[0]`` to ``sigmas[-1]``.

    Args:
        denoiser: ``D(x, sigma) -> x0`` in VE coordinates, sigma of shape ``[B]``.
        x: the state at ``sigmas[0]``, shape ``[B, ...]`` (e.g. ``noise * sigmas[0]``).
        sigmas: a strictly decreasing grid of noise levels >= 0 (tensor or sequence of floats).
        solver: a registered name (see ``gaussport.solvers.available()``) or a solver instance.
        callback: called once per interval with a :class:`StepInfo`.
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).
        dtype: solver-state dtype, ``torch.float32`` (default) or ``torch.float64``; float64 inputs
            are kept in float64.
        model_dtype: the dtype the denoiser receives; default: the dtype of ``x``.
        state: a solver state returned by an earlier run (``Solution.state``) to continue it.
        check_finite: raise ``FloatingPointError`` if the result is not finite.
        enable_grad: track gradients through the solve. Off by default: sampling builds no autograd
            graph (as k-diffusion's samplers); pass ``True`` to differentiate through sampling.
        **options: solver options, when ``solver`` is a name (e.g. ``solver_order=3``).

    Returns:
        A :class:`Solution` with the final state in ``x.dtype`` and the evaluation count.
    """
    grid = as_grid(sigmas)
    check_state(x)
    solver_obj = resolve_solver(solver, options)
    return run_grid(
        denoiser, x, grid, solver_obj, callback, disable, dtype, model_dtype, state, check_finite, enable_grad
    )


def run_grid(
    denoiser: Denoiser,
    x: Tensor,
    grid: Grid,
    solver: Solver,
    callback: Callback | None,
    disable: bool | None,
    dtype: torch.dtype | None,
    model_dtype: torch.dtype | None,
    state: Any,
    check_finite: bool,
    enable_grad: bool,
) -> Solution:
    """The solver over a validated grid, either direction: :func:`solve`, and ``invert`` without teleport."""
    work = state_dtype(x.dtype, dtype)
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=work)
    with torch.set_grad_enabled(enable_grad):
        x_end, state = integrate(
            call, solver, x.to(work), grid, state=state, callback=callback, disable=disable
        )
        return Solution(finish(x_end, x.dtype, check_finite), call.nfe, grid, state)


def solver_grid(grid: Grid, sigma_skip: float, teleport: str | _grids.GridFamily) -> Grid:
    """The grid the solver integrates on the far side of a teleport at ``sigma_skip``.

    For a decreasing grid (:func:`sample`) the part below ``sigma_skip``, starting there; for an
    increasing one (:func:`gaussport.inversion.invert`) the part below ``sigma_skip`` too, ending
    there -- the same levels in the opposite order.

    Raises:
        ValueError: for an unknown ``teleport`` mode.
    """
    if len(grid) > 1 and grid[-1] > grid[0]:
        return solver_grid(grid[::-1], sigma_skip, teleport)[::-1]
    if teleport == "truncate":
        return _grids.truncate(grid, sigma_skip)
    if teleport == "respace":
        return _grids.respace(grid, sigma_skip)
    if isinstance(teleport, _grids.GridFamily):
        return _grids.respace(grid, sigma_skip, teleport)
    raise ValueError(f"teleport must be 'truncate', 'respace' or a grids.GridFamily; got {teleport!r}.")


def sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    solver: Solver | str = "heun",
    *,
    warm_start: Any = None,
    sigma_skip: float | str | None = None,
    teleport: str | _grids.GridFamily = "truncate",
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype | None = None,
    model_dtype: torch.dtype | None = None,
    check_finite: bool = True,
    enable_grad: bool = False,
    schedule: str | _grids.GridFamily | None = None,
    probes: Any = None,
    recipe: Any = None,
    nfe: int | None = None,
    **options: Any,
) -> Solution:
    """Sample with an analytic warm start: exact Gaussian flow to ``sigma_skip``, then a solver.

    The teleport moves ``x`` from ``sigmas[0]`` to ``sigma_skip`` with ``warm_start.flow`` (the
    closed-form PF-ODE map of a Gaussian, 0 evaluations); the solver integrates the rest. A
    statistics-based solver left at ``ems=None`` (DPM-Solver-v3) runs with the analytic EMS of the
    warm-start Gaussian (:func:`with_warm_start_statistics`). Without a warm start use :func:`solve`.

    Args:
        denoiser: the model, ``D(x, sigma) -> x0`` (VE, sigma of shape ``[B]``).
        x: the state at ``sigmas[0]``.
        sigmas: the grid the caller would have used without a warm start.
        solver: a registered name or a solver instance.
        warm_start: an object with ``flow(x, sigma_from, sigma_to)`` and, for callbacks,
            ``__call__(x, sigma)`` -- normally a :class:`gaussport.analytic.Gaussian` fitted to the
            data -- or the path of a statistics file written by ``Gaussian.save``
            (:func:`load_warm_start`; read on every call: to sample repeatedly, load it once with
            :func:`load_statistics` and pass the Gaussian). Required (``None`` runs
            :func:`solve` with a deprecation warning).
        sigma_skip: the teleport level, in ``[sigmas[-1], sigmas[0]]``, or ``"auto"``: the level
            :func:`gaussport.tuning.auto.auto_sigma_skip` picks for this solver, grid and ``teleport``
            (docs/auto-level.md; it probes the model once per model and statistics, cached on disk).
        teleport: what the solver integrates below ``sigma_skip``:

            * ``"truncate"``: ``sigma_skip`` followed by the grid's levels below it (fewer
              evaluations; the paper's Heun experiments);
            * ``"respace"``: the same number of steps of the grid's family (detected) over
              ``[sigma_min, sigma_skip]`` (same evaluations; the paper's DPM-Solver/UniPC runs);
            * a :class:`gaussport.grids.GridFamily`: respace with that family.
        callback: called once per interval with a :class:`StepInfo`. With ``"truncate"``, intervals
            covered by the teleport are reported too (``teleported=True``, the state on the exact
            Gaussian path and the Gaussian's denoised value); with a respaced grid, once per
            interval of the new grid.
        disable: disables the progress bar (as in :func:`solve`).
        dtype: solver-state dtype (as in :func:`solve`).
        model_dtype: the dtype the denoiser receives (as in :func:`solve`).
        check_finite: raise ``FloatingPointError`` if the result is not finite.
        enable_grad: track gradients (as in :func:`solve`; off by default).
        schedule: deprecated name of ``teleport``.
        probes: with ``sigma_skip="auto"``: a :class:`gaussport.tuning.probes.ProbeRecord`, the path
            of one, or a data tensor to probe from (default: probes of the warm start's marginal).
        recipe: a tuned :class:`gaussport.tuning.Recipe` or the path of its JSON file: its entry
            for ``(solver, nfe)`` sets the teleport level and the solver's grid and options;
            ``sigmas`` only gives the start (``sigmas[0]`` must be the recipe's ``sigma_max``)
            and, without ``nfe``, the budget (``solver.evaluations(sigmas)``).
        nfe: with ``recipe``: the entry's budget, instead of the one ``sigmas`` costs.
        **options: solver options, when ``solver`` is a name.

    Returns:
        A :class:`Solution`; ``sigmas`` is the grid the solver integrated and ``teleport`` the
        ``(sigma_from, sigma_to)`` pair of the teleport (``sigma_to`` is the level chosen by
        ``"auto"`` or the recipe).

    Raises:
        ValueError: if ``sigma_skip`` is missing or outside the grid, or the mode is unknown.
    """
    teleport = _deprecation.renamed_argument(
        "gaussport.sample", "schedule", "teleport", schedule, teleport, "truncate"
    )
    if warm_start is None:
        if sigma_skip is not None or recipe is not None:
            what = "recipe" if recipe is not None else "sigma_skip"
            raise ValueError(f"{what} was given without warm_start; pass the Gaussian to teleport with.")
        _deprecation.warn("gaussport.sample(..., warm_start=None)", "gaussport.solve(...)")
        return solve(
            denoiser,
            x,
            sigmas,
            solver,
            callback=callback,
            disable=disable,
            dtype=dtype,
            model_dtype=model_dtype,
            check_finite=check_finite,
            enable_grad=enable_grad,
            **options,
        )
    if recipe is not None:
        if sigma_skip is not None or probes is not None:
            raise ValueError(
                "recipe= was given with sigma_skip= or probes=; the recipe's entry sets the teleport "
                "level: drop sigma_skip (or drop the recipe to choose the level yourself)."
            )
        warm_start = checked_warm_start(warm_start, 0.0)
        grid = as_grid(sigmas)
        check_state(x)
        entry = _recipe_entry(recipe, solver, grid, nfe, options)
        below = as_grid(entry.sigmas)
        solver_obj = with_warm_start_statistics(
            get_solver(entry.solver, **dict(entry.options)), warm_start, below
        )
        teleport = "respace"
    else:
        if nfe is not None:
            raise ValueError("nfe= selects a recipe entry; pass recipe=... too, or drop nfe.")
        warm_start = checked_warm_start(warm_start, sigma_skip)
        grid = as_grid(sigmas)
        check_state(x)
        if isinstance(sigma_skip, str):
            if sigma_skip != "auto":
                raise ValueError(f"sigma_skip must be a noise level or 'auto'; got {sigma_skip!r}.")
            sigma_skip = _auto_level(denoiser, warm_start, grid, solver, teleport, probes, x.device, options)
        elif probes is not None:
            raise ValueError(
                "probes= is only used with sigma_skip='auto'; drop it or pass sigma_skip='auto'."
            )
        skip = checked_skip(grid, sigma_skip)
        below = solver_grid(grid, skip, teleport)
        solver_obj = with_warm_start_statistics(resolve_solver(solver, options), warm_start, below)
    work = state_dtype(x.dtype, dtype)
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=work)
    with torch.set_grad_enabled(enable_grad):
        return _teleport_and_solve(
            call,
            solver_obj,
            warm_start,
            x,
            grid,
            below,
            teleport == "truncate",
            callback,
            disable,
            check_finite,
        )


def _auto_level(
    denoiser: Any,
    warm_start: Any,
    grid: Grid,
    solver: Any,
    teleport: Any,
    probes: Any,
    device: torch.device,
    options: dict[str, Any],
) -> float:
    """``sigma_skip="auto"``: :func:`gaussport.tuning.auto.auto_sigma_skip` for this call (the model is
    probed on ``device``, where the caller's state lives)."""
    from .tuning.auto import auto_sigma_skip
    from .tuning.probes import ProbeRecord

    if not isinstance(warm_start, Gaussian):
        raise ValueError(
            "sigma_skip='auto' needs a gaussport.analytic.Gaussian warm start (or its statistics file); "
            f"got {type(warm_start).__name__}. Pass a numeric sigma_skip instead."
        )
    data = None
    if isinstance(probes, Tensor):
        data, probes = probes, None
    elif probes is not None and not isinstance(probes, (ProbeRecord, str, os.PathLike)):
        raise TypeError(
            "probes must be a gaussport.tuning.probes.ProbeRecord, the path of one, or a data tensor to "
            f"probe from; got {type(probes).__name__}."
        )
    return auto_sigma_skip(
        denoiser,
        warm_start,
        grid,
        solver,
        teleport=teleport,
        probes=probes,
        data=data,
        device=device,
        **options,
    )


def _recipe_entry(recipe: Any, solver: Any, grid: Grid, nfe: int | None, options: dict[str, Any]) -> Any:
    """The recipe's entry for ``(solver, nfe)``, checked against the caller's grid."""
    if isinstance(recipe, (str, os.PathLike)):
        from .tuning.recipe import load_recipe

        recipe = load_recipe(recipe)
    if not callable(getattr(recipe, "entry", None)) or not hasattr(recipe, "sigma_max"):
        raise TypeError(f"recipe must be a gaussport.tuning.Recipe; got {type(recipe).__name__}.")
    if not isinstance(solver, str):
        raise ValueError(
            "recipe= needs the solver by its registered name (e.g. 'dpmpp_2m'), not an instance."
        )
    if options:
        raise ValueError(
            f"solver options {sorted(options)} were given with recipe=; the entry carries its "
            "options: drop them."
        )
    if nfe is None:
        nfe = get_solver(solver).evaluations(grid)
    elif isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer; got {nfe!r}.")
    sigma_max = float(recipe.sigma_max)
    if abs(grid[0] - sigma_max) > 1e-6 * sigma_max:
        raise ValueError(
            f"the grid starts at sigma={grid[0]}, but the recipe was tuned from sigma_max={sigma_max}; "
            f"start the grid at {sigma_max}."
        )
    return recipe.entry(solver, int(nfe))


def checked_warm_start(warm_start: Any, sigma_skip: float | str | None) -> Any:
    """The warm start (a path read from its file), checked to teleport with.

    Shared by :func:`sample` and :func:`gaussport.inversion.invert` (not part of the public API).
    """
    warm_start = load_warm_start(warm_start)
    if not callable(getattr(warm_start, "flow", None)):
        raise TypeError(
            "warm_start must provide flow(x, sigma_from, sigma_to) (e.g. gaussport.analytic.Gaussian) or "
            f"be the path of a statistics file written by Gaussian.save; got {type(warm_start).__name__}."
        )
    if sigma_skip is None:
        raise ValueError(
            "warm_start needs sigma_skip, the noise level to teleport to (docs/choosing.md explains "
            "how to choose it; a common start is ~10-20 for images in [-1, 1])."
        )
    return warm_start


def checked_skip(grid: Grid, sigma_skip: float | None) -> float:
    """``sigma_skip`` as a float inside the grid's range, either direction (shared with ``invert``)."""
    skip = noise_level(sigma_skip, name="sigma_skip")
    low, high = min(grid[0], grid[-1]), max(grid[0], grid[-1])
    if not low <= skip <= high:
        raise ValueError(
            f"sigma_skip = {skip} is outside the grid [{low}, {high}]; choose a level between "
            "the grid's smallest and largest noise levels."
        )
    return skip


def teleport_with(warm_start: Any, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
    """``warm_start.flow(x, sigma_from, sigma_to)``, checked as a model's output is (shared with ``invert``).

    A flow map that returned another shape would silently change the batch the solver runs on.
    """
    out = warm_start.flow(x, sigma_from, sigma_to)
    check_output(out, x, "warm_start.flow", "a flow map moves x along its trajectory and keeps its shape")
    return out.to(x.dtype)


def warm_denoised(warm_start: Any, x: Tensor, sigma: float) -> Tensor:
    """The warm start's denoised value at ``sigma``, for the callbacks of teleported intervals."""
    sigma_batch = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
    out = warm_start(x, sigma_batch)
    check_output(out, x, "the warm start's denoiser")
    return out.to(x.dtype)


def _teleport_and_solve(
    call: DenoiserCall,
    solver: Solver,
    warm_start: Any,
    x: Tensor,
    grid: Grid,
    below: Grid,
    truncated: bool,
    callback: Callback | None,
    disable: bool | None,
    check_finite: bool,
) -> Solution:
    work = call.state_dtype
    x0 = x.to(work)
    start = below[0]
    # Intervals of the caller's grid that lie entirely above the teleport level.
    covered = sum(1 for i in range(len(grid) - 1) if grid[i + 1] >= start) if truncated else 0
    if callback is not None:
        for i in range(covered):
            x_i = teleport_with(warm_start, x0, grid[0], grid[i]) if i else x0
            callback(
                StepInfo(
                    i, grid[i], grid[i + 1], x_i, warm_denoised(warm_start, x_i, grid[i]), teleported=True
                )
            )
    x_start = teleport_with(warm_start, x0, grid[0], start) if start < grid[0] else x0
    logger.debug(
        "teleported from sigma=%g to sigma=%g; %d solver steps follow", grid[0], start, len(below) - 1
    )
    record = Teleport(warm_start, grid[0], x0, start) if start < grid[0] else None
    x_end, state = integrate(
        call,
        solver,
        x_start,
        below,
        callback=callback,
        disable=disable,
        index_offset=covered,
        teleport=record,
    )
    return Solution(finish(x_end, x.dtype, check_finite), call.nfe, below, state, (grid[0], start))
