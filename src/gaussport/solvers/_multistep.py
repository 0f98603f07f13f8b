"""Bookkeeping shared by the multistep solvers: per-step orders, history checks, seeded history.

* **Warm-up.** A run starts with whatever history its state holds (none after :meth:`Solver.init`
  without seeding) and uses order ``min(order, stored points + 1)``: orders 1, 2, ... on a cold
  start, exactly as every reference does.
* **lower_order_final.** With it, step ``i`` of a grid of ``n`` intervals uses at most order
  ``n - i``: the last interval is first order, the one before at most second order, and so on
  (the rule of wl-zhao/UniPC and diffusers' ``UniPCMultistepScheduler``; the other references'
  rules: docs/peer-conventions.md#lower_order_final-in-the-references).
  It counts the intervals of the grid given to the current run, so a run split with ``state=``
  lowers the order at the end of each part. A final step to ``sigma = 0`` is ``x = D`` regardless.
* **Seeded history** (opt-in, ``seed_history=True``): after an analytic warm start the history is
  filled with the warm-start model's denoised values on its exact path at the levels
  ``sigma_0 e^{j h_0}``, ``j = 1..k``, i.e. the grid's first step size in ``lambda = -log sigma``
  continued upwards (equal steps in sigma for the sigma-space iPNDM;
  docs/solvers.md#seeded-history-opt-in). When the model *is* that Gaussian, this
  is the exact history of the order tests.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import Tensor

from .._checks import Grid
from .base import Teleport

__all__ = ["step_order", "final_order_cap", "check_history_before", "seed_levels", "seed_path"]

logger = logging.getLogger("gaussport")


def step_order(order: int, stored: int, sigmas: Grid, i: int, lower_order_final: bool) -> int:
    """The order of step ``i``: limited by ``stored`` earlier points (warm-up) and, optionally, at the end."""
    p = min(order, stored + 1)
    if lower_order_final:
        p = min(p, len(sigmas) - 1 - i)
    return max(p, 1)


def final_order_cap(order: int, lower_order_final: bool) -> int:
    """The global order left by ``lower_order_final``: a first-order last step (local error
    ``O(h^2)``) caps it at 2 on grids ending above 0."""
    return min(order, 2) if lower_order_final else order


def check_history_before(history_sigmas: tuple[float, ...], sigma: float, sigma_next: float) -> None:
    """Stored points must lie before the current level on this run's way (the state belongs to it).

    Before means above ``sigma`` on a decreasing grid and below it on an increasing one (an
    inversion): the side the run came from.

    Raises:
        ValueError: if the newest stored level is not strictly before ``sigma`` -- a state passed
            with ``state=`` from a run that does not end where this grid starts.
    """
    if not history_sigmas:
        return
    newest = history_sigmas[-1]
    if not (newest > sigma if sigma_next < sigma else newest < sigma):
        raise ValueError(
            f"the solver state holds history at sigma = {newest!r}, but this step starts at sigma = "
            f"{sigma!r} going {'down' if sigma_next < sigma else 'up'}; a state passed with state= must "
            "come from the run ending at this grid's first level, in the same direction "
            "(solve(G[:k]) then solve(G[k-1:], state=...))."
        )


def seed_levels(
    sigmas: Grid, count: int, spacing: Literal["lambda", "sigma"] = "lambda"
) -> tuple[float, ...]:
    """``count`` levels before ``sigmas[0]``, oldest first: the grid's first step continued backwards.

    On a decreasing grid these lie above ``sigmas[0]``; on an increasing one (an inversion), below.

    ``spacing="lambda"``: equal steps in ``lambda = -log sigma`` (``sigma_0 e^{j h_0}``), the variable
    of the exponential integrators; ``"sigma"``: equal steps in sigma (``sigma_0 + j (sigma_0 -
    sigma_1)``), the variable of Adams-Bashforth in sigma (iPNDM, whose equal-step coefficients assume
    it). Empty when there is nothing to seed for: no steps, or a single step straight to 0.
    """
    if count <= 0 or len(sigmas) < 2 or sigmas[1] == 0.0:
        return ()
    if spacing == "sigma":
        step = sigmas[0] - sigmas[1]
        levels = tuple(sigmas[0] + j * step for j in range(count, 0, -1))
        if levels[0] <= 0.0:
            raise ValueError(
                f"cannot seed {count} levels in equal steps of {-step:g} below sigma = {sigmas[0]:g}: they "
                "would reach sigma <= 0. Start the inversion higher or take a smaller first step."
            )
        return levels
    h0 = math.log(sigmas[0] / sigmas[1])
    return tuple(sigmas[0] * math.exp(j * h0) for j in range(count, 0, -1))


def seed_path(
    teleport: Teleport | None,
    x: Tensor,
    sigmas: Grid,
    count: int,
    spacing: Literal["lambda", "sigma"] = "lambda",
) -> list[tuple[float, Tensor, Tensor]]:
    """``(sigma_j, x_j, D_j)`` on the warm-start model's exact path at :func:`seed_levels`, oldest first.

    ``x_j = model.flow(x_from, sigma_from, sigma_j)`` and ``D_j = model(x_j, sigma_j)`` (no model
    evaluations are counted: the warm-start model is analytic). Returns ``[]`` without a teleport.
    """
    if teleport is None:
        logger.debug("seed_history=True but the run follows no teleport: starting with empty history")
        return []
    model = teleport.model
    if not (callable(model) and callable(getattr(model, "flow", None))):
        raise TypeError(
            "seed_history=True needs a warm-start model with flow(x, sigma_from, sigma_to) and "
            f"__call__(x, sigma) (e.g. gaussport.analytic.Gaussian); got {type(model).__name__}."
        )
    out = []
    for level in seed_levels(sigmas, count, spacing):
        x_j = model.flow(teleport.x_from, teleport.sigma_from, level).to(x.dtype)
        sigma = torch.full((x_j.shape[0],), level, dtype=x_j.dtype, device=x_j.device)
        out.append((level, x_j, model(x_j, sigma).to(x.dtype)))
    return out
