"""The single step loop (:func:`solve`) and the analytic warm start (:func:`sample`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import trange

from . import grids as _grids
from ._checks import Grid, as_grid, check_state, state_dtype
from .denoiser import Denoiser, DenoiserCall
from .solvers import Solver, WarmStart
from .solvers import get as get_solver

__all__ = ["solve", "sample", "Solution", "StepInfo", "Callback"]

logger = logging.getLogger("gaussport")


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a callback receives, once per grid interval.

    Attributes:
        i: index of the interval in the grid the caller passed.
        sigma: noise level at the start of the interval.
        sigma_next: noise level at its end.
        x: the state at ``sigma`` (before the step), in solver precision.
        denoised: ``D(x, sigma)``; for intervals covered by the warm start, the Gaussian's.
        teleported: whether the interval was covered by the analytic warm start (0 evaluations).
    """

    i: int
    sigma: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    teleported: bool = False


Callback = Callable[[StepInfo], None]


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


def _resolve_solver(solver: Solver | str, options: dict[str, Any]) -> Solver:
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


def _integrate(
    call: DenoiserCall,
    solver: Solver,
    x: Tensor,
    grid: Grid,
    state: Any,
    callback: Callback | None,
    disable: bool | None,
    index_offset: int = 0,
    warm_start: WarmStart | None = None,
) -> tuple[Tensor, Any]:
    """The one step loop: thread ``x`` and the solver state through ``solver.step``."""
    if state is None:
        state = solver.init(x, grid, warm_start)
    for i in trange(len(grid) - 1, disable=disable, desc=type(solver).__name__, unit="step"):
        step = solver.step(call, x, grid, i, state)
        if callback is not None:
            callback(StepInfo(i + index_offset, grid[i], grid[i + 1], x, step.denoised))
        x, state = step.x, step.state
    return x, state


def _finish(x: Tensor, out_dtype: torch.dtype, check_finite: bool) -> Tensor:
    # One host synchronisation per solve, after the loop: a NaN must never pass silently.
    if check_finite and not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            "the solve produced NaN or infinite values: the denoiser returned non-finite outputs "
            "(check the model, its dtype -- float16 overflows above ~65504 -- and its sigma range)."
        )
    return x.to(out_dtype)


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
        **options: solver options, when ``solver`` is a name (e.g. ``order=3``).

    Returns:
        A :class:`Solution` with the final state in ``x.dtype`` and the evaluation count.
    """
    grid = as_grid(sigmas)
    check_state(x)
    solver_obj = _resolve_solver(solver, options)
    work = state_dtype(x.dtype, dtype)
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=work)
    with torch.set_grad_enabled(enable_grad):
        x_end, state = _integrate(call, solver_obj, x.to(work), grid, state, callback, disable)
        return Solution(_finish(x_end, x.dtype, check_finite), call.nfe, grid, state)


def sample(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    solver: Solver | str = "heun",
    *,
    warm_start: Any = None,
    sigma_skip: float | None = None,
    schedule: str | _grids.GridFamily = "truncate",
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype | None = None,
    model_dtype: torch.dtype | None = None,
    check_finite: bool = True,
    enable_grad: bool = False,
    **options: Any,
) -> Solution:
    """Sample with an analytic warm start: exact Gaussian flow to ``sigma_skip``, then a solver.

    The warm start moves ``x`` from ``sigmas[0]`` to ``sigma_skip`` with ``warm_start.flow`` (the
    closed-form PF-ODE map of a Gaussian, 0 evaluations); the solver integrates the rest.

    Args:
        denoiser: the model, ``D(x, sigma) -> x0`` (VE, sigma of shape ``[B]``).
        x: the state at ``sigmas[0]``.
        sigmas: the grid the caller would have used without a warm start.
        solver: a registered name or a solver instance.
        warm_start: an object with ``flow(x, sigma_from, sigma_to)`` and, for callbacks,
            ``__call__(x, sigma)`` -- normally a :class:`gaussport.analytic.Gaussian` fitted to the
            data. ``None``: plain :func:`solve`.
        sigma_skip: the teleport level, in ``[sigmas[-1], sigmas[0]]``.
        schedule: what the solver integrates below ``sigma_skip``:

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
        **options: solver options, when ``solver`` is a name.

    Returns:
        A :class:`Solution`; ``sigmas`` is the grid the solver integrated and ``teleport`` the
        ``(sigma_from, sigma_to)`` pair of the warm start.

    Raises:
        ValueError: if ``sigma_skip`` is missing or outside the grid, or the schedule is unknown.
    """
    if warm_start is None:
        if sigma_skip is not None:
            raise ValueError("sigma_skip was given without warm_start; pass the Gaussian to teleport with.")
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
    if not callable(getattr(warm_start, "flow", None)):
        raise TypeError(
            f"warm_start must provide flow(x, sigma_from, sigma_to) (e.g. gaussport.analytic.Gaussian); "
            f"got {type(warm_start).__name__}."
        )
    if sigma_skip is None:
        raise ValueError(
            "warm_start needs sigma_skip, the noise level to teleport to (docs/warm-start.md explains "
            "how to choose it; a common start is ~10-20 for images in [-1, 1])."
        )
    grid = as_grid(sigmas)
    check_state(x)
    skip = float(sigma_skip)
    if not grid[-1] <= skip <= grid[0]:
        raise ValueError(
            f"sigma_skip = {skip} is outside the grid [{grid[-1]}, {grid[0]}]; choose a level between "
            "the grid's last and first noise levels."
        )
    if schedule == "truncate":
        solver_grid = _grids.truncate(grid, skip)
    elif schedule == "respace":
        solver_grid = _grids.respace(grid, skip)
    elif isinstance(schedule, _grids.GridFamily):
        solver_grid = _grids.respace(grid, skip, schedule)
    else:
        raise ValueError(f"schedule must be 'truncate', 'respace' or a grids.GridFamily; got {schedule!r}.")

    solver_obj = _resolve_solver(solver, options)
    work = state_dtype(x.dtype, dtype)
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=work)
    with torch.set_grad_enabled(enable_grad):
        return _teleport_and_solve(
            call,
            solver_obj,
            warm_start,
            x,
            grid,
            solver_grid,
            schedule == "truncate",
            callback,
            disable,
            check_finite,
        )


def _teleport_and_solve(
    call: DenoiserCall,
    solver: Solver,
    warm_start: Any,
    x: Tensor,
    grid: Grid,
    solver_grid: Grid,
    truncated: bool,
    callback: Callback | None,
    disable: bool | None,
    check_finite: bool,
) -> Solution:
    work = call.state_dtype
    x0 = x.to(work)
    start = solver_grid[0]
    # Intervals of the caller's grid that lie entirely above the teleport level.
    covered = sum(1 for i in range(len(grid) - 1) if grid[i + 1] >= start) if truncated else 0
    if callback is not None:
        for i in range(covered):
            x_i = warm_start.flow(x0, grid[0], grid[i]) if i else x0
            sigma_i = torch.full((x0.shape[0],), grid[i], dtype=work, device=x0.device)
            callback(
                StepInfo(i, grid[i], grid[i + 1], x_i, warm_start(x_i, sigma_i).to(work), teleported=True)
            )
    x_start = warm_start.flow(x0, grid[0], start) if start < grid[0] else x0
    logger.debug(
        "teleported from sigma=%g to sigma=%g; %d solver steps follow", grid[0], start, len(solver_grid) - 1
    )
    handover = WarmStart(warm_start, grid[0], x0, start) if start < grid[0] else None
    x_end, state = _integrate(call, solver, x_start, solver_grid, None, callback, disable, covered, handover)
    return Solution(_finish(x_end, x.dtype, check_finite), call.nfe, solver_grid, state, (grid[0], start))
