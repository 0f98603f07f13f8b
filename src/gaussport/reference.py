"""High-accuracy reference solves of the PF-ODE, independent of the registered solvers.

The exact endpoint of a trajectory is what solver error is measured against. For a Gaussian it is
the closed-form flow; for anything else (mixtures, trained networks) it is this solve: the classical
fourth-order Runge-Kutta method in ``lambda = -log sigma``, where the ODE reads
``dx/dlambda = D(x, e^-lambda) - x`` and is smooth down to small sigma. It shares no code with the
solvers under test. A grid ending in 0 ends with ``x = D(x, sigma_min)``, the final step every
solver takes, so the reference isolates the solver error on the positive part of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import trange

from ._checks import as_grid, check_state
from .denoiser import Denoiser, DenoiserCall

__all__ = ["reference_solve"]


def reference_solve(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    steps_per_unit: int = 100,
    dtype: torch.dtype = torch.float64,
    model_dtype: torch.dtype | None = None,
    disable: bool | None = True,
) -> Tensor:
    """Solve from ``sigmas[0]`` to ``sigmas[-1]`` with RK4 in ``lambda`` (only the endpoints matter).

    Args:
        denoiser: ``D(x, sigma)``.
        x: the state at ``sigmas[0]``.
        sigmas: a grid; only its first level, its last positive level and whether it ends in 0 are used.
        steps_per_unit: RK4 steps per unit of ``lambda`` (the default gives local errors ~1e-9
            relative on smooth problems; the Gaussian tests check this against the closed form).
        dtype: state dtype of the reference solve (float64 by default).
        model_dtype: the dtype the denoiser receives (default: ``x.dtype``).
        disable: hides the progress bar (default).

    Returns:
        The endpoint, in ``x.dtype``.
    """
    grid = as_grid(sigmas)
    check_state(x)
    positive = [s for s in grid if s > 0.0]
    call = DenoiserCall(denoiser, model_dtype=model_dtype or x.dtype, state_dtype=dtype)
    state = x.to(dtype)
    if len(positive) >= 2:
        lam0, lam1 = -math.log(positive[0]), -math.log(positive[-1])
        n = max(1, math.ceil((lam1 - lam0) * steps_per_unit))
        h = (lam1 - lam0) / n

        def velocity(lam: float, y: Tensor) -> Tensor:
            return call(y, math.exp(-lam)) - y

        for k in trange(n, disable=disable, desc="reference RK4"):
            lam = lam0 + k * h
            k1 = velocity(lam, state)
            k2 = velocity(lam + h / 2, state + (h / 2) * k1)
            k3 = velocity(lam + h / 2, state + (h / 2) * k2)
            k4 = velocity(lam + h, state + h * k3)
            state = state + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    if grid[-1] == 0.0 and positive:
        state = call(state, positive[-1])
    return state.to(x.dtype)
