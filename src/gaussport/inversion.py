"""Inversion: the probability-flow ODE run upwards, from data to noise, and the teleport in reverse.

:func:`invert` is the third entry point beside :func:`gaussport.solve` and :func:`gaussport.sample`
(module :mod:`gaussport.sampling`, whose rules it shares: solver names, input checks, the warm start
given as a statistics file). Editing workflows (DDIM inversion, ComfyUI's unsampler) integrate an
increasing grid from the data to noise, then sample back down. The grid rules
(docs/conventions.md#increasing-grids-inversion): strictly increasing, starting above 0 -- the ODE
is singular at sigma = 0 --, and only solvers that declare ``supports_inversion`` run it. With a
warm start the solver integrates up to ``sigma_skip`` and the Gaussian's closed-form flow carries
the state on to the top level (docs/warm-start.md#inversion-the-teleport-in-reverse).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import grids as _grids
from ._checks import as_grid, check_state, state_dtype
from .denoiser import Denoiser, DenoiserCall
from .loop import Callback, StepInfo, finish, integrate
from .sampling import (
    Solution,
    checked_skip,
    checked_warm_start,
    resolve_solver,
    run_grid,
    solver_grid,
    teleport_with,
    warm_denoised,
)
from .solvers import Solver, available

__all__ = ["invert", "check_inversion"]

logger = logging.getLogger("gaussport")


def check_inversion(solver: Solver, name: str | None = None) -> None:
    """Raise a ValueError naming the solvers that can, if ``solver`` cannot run an increasing grid.

    A solver integrates an increasing grid (an inversion) only if it declares
    ``supports_inversion`` (:class:`gaussport.loop.Solver`). ``name``: the registered name the
    caller used, for the message.
    """
    if not solver.supports_inversion:
        label = f"solver {name!r}" if name else type(solver).__name__
        raise ValueError(
            f"{label} cannot integrate an increasing grid (an inversion, data to noise): it "
            "does not declare supports_inversion. Solvers that can: "
            f"{', '.join(available(inversion=True))}."
        )


def invert(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    solver: Solver | str = "heun",
    *,
    warm_start: Any = None,
    sigma_skip: float | None = None,
    teleport: str | _grids.GridFamily = "truncate",
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype | None = None,
    model_dtype: torch.dtype | None = None,
    state: Any = None,
    check_finite: bool = True,
    enable_grad: bool = False,
    **options: Any,
) -> Solution:
    """Invert: integrate the probability-flow ODE upwards, from data (``sigmas[0]``) to noise.

    The grid is strictly increasing and starts above 0 (docs/conventions.md#increasing-grids-inversion; e.g.
    ``grids.karras(n, 0.002, 80.0, append_zero=False)[::-1]``). The solver runs the same
    update as in :func:`gaussport.solve`, upwards; only solvers that declare ``supports_inversion`` do
    (``gaussport.solvers.available(inversion=True)``; the others raise). With ``warm_start``, the
    solver integrates from ``sigmas[0]`` up to ``sigma_skip`` and the warm start's exact flow
    carries the state from there to ``sigmas[-1]`` (the *reverse teleport*, 0 evaluations): an
    inversion pays model evaluations only below ``sigma_skip``. Sampling back down with
    :func:`gaussport.sample` and the same warm start and ``sigma_skip`` undoes the teleport exactly
    (docs/warm-start.md#inversion-the-teleport-in-reverse).

    Args:
        denoiser: ``D(x, sigma) -> x0`` in VE coordinates, sigma of shape ``[B]``.
        x: the state at ``sigmas[0]`` (the data, or a slightly noised version of it).
        sigmas: a strictly increasing grid of noise levels, ``sigmas[0] > 0``.
        solver: a registered name or a solver instance that supports inversion.
        warm_start: a :class:`gaussport.analytic.Gaussian` (or an object with ``flow`` and
            ``__call__``) or a statistics file path, to teleport with above ``sigma_skip``.
        sigma_skip: the teleport level, in ``[sigmas[0], sigmas[-1]]``.
        teleport: what the solver integrates below ``sigma_skip``: ``"truncate"`` (the grid's
            levels below it, then ``sigma_skip``: fewer evaluations), ``"respace"`` (the same
            number of steps of the grid's family over ``[sigmas[0], sigma_skip]``) or a
            :class:`gaussport.grids.GridFamily`.
        callback: called once per interval with a :class:`StepInfo`: the solver's intervals, then
            (``"truncate"``) the intervals above ``sigma_skip``, ``teleported=True``, with the state
            on the warm start's exact path and its denoised value.
        disable: disables the progress bar (as in :func:`gaussport.solve`).
        dtype: solver-state dtype (as in :func:`gaussport.solve`).
        model_dtype: the dtype the denoiser receives (as in :func:`gaussport.solve`).
        state: a solver state from an earlier inversion ending at ``sigmas[0]``, to continue it.
        check_finite: raise ``FloatingPointError`` if the result is not finite.
        enable_grad: track gradients (as in :func:`gaussport.solve`; off by default).
        **options: solver options, when ``solver`` is a name.

    Returns:
        A :class:`Solution` with the state at ``sigmas[-1]``; ``sigmas`` is the grid the solver
        integrated (increasing, ending at the teleport level) and ``teleport`` the
        ``(sigma_from, sigma_to)`` pair of the reverse teleport, or ``None`` without one.

    Raises:
        ValueError: for a grid that is not strictly increasing or starts at 0, a solver that does
            not support inversion, ``sigma_skip`` outside the grid or without ``warm_start``.
    """
    grid = as_grid(sigmas, increasing=True)
    check_state(x)
    solver_obj = resolve_solver(solver, options)
    check_inversion(solver_obj, solver if isinstance(solver, str) else None)
    if warm_start is None:
        if sigma_skip is not None:
            raise ValueError("sigma_skip was given without warm_start; pass the Gaussian to teleport with.")
        return run_grid(
            denoiser,
            x,
            grid,
            solver_obj,
            callback,
            disable,
            dtype,
            model_dtype,
            state,
            check_finite,
            enable_grad,
        )
    warm = checked_warm_start(warm_start, sigma_skip)
    skip = checked_skip(grid, sigma_skip)
    below = solver_grid(grid, skip, teleport)
    work = state_dtype(x.dtype, dtype)
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=work)
    with torch.set_grad_enabled(enable_grad):
        x_skip, state = integrate(
            call, solver_obj, x.to(work), below, state=state, callback=callback, disable=disable
        )
        top = below[-1]
        if callback is not None and teleport == "truncate":
            for i in range(len(grid) - 1):
                if grid[i] >= top:  # an interval entirely above the teleport level
                    x_i = teleport_with(warm, x_skip, top, grid[i]) if grid[i] > top else x_skip
                    info = StepInfo(
                        i, grid[i], grid[i + 1], x_i, warm_denoised(warm, x_i, grid[i]), teleported=True
                    )
                    callback(info)
        x_end = teleport_with(warm, x_skip, top, grid[-1]) if top < grid[-1] else x_skip
        logger.debug(
            "inverted to sigma=%g in %d solver steps, teleported on to sigma=%g",
            top,
            len(below) - 1,
            grid[-1],
        )
        return Solution(finish(x_end, x.dtype, check_finite), call.nfe, below, state, (top, grid[-1]))
