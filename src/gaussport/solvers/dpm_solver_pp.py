"""DPM-Solver++ in data-prediction form: DDIM, 2M (midpoint and Taylor), 3M (published and corrected), 2S.

All updates are exponential integrators in ``lambda = -log sigma`` (docs/devdocs-derivations.md):

``x_t = (sigma_t / sigma_s) x_s - expm1(-h) D_s + sum_j w_j (D_j - D_s)``,   ``h = lambda_t - lambda_s``,

with weights ``w_j`` from :func:`gaussport.solvers._expint.interpolation_weights`: the exact
phi-function integral of the polynomial through the denoised values at earlier levels, except
where the published methods deliberately differ (the 'midpoint' second-order coefficient and the
halved third-order term of the published 3M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from .._checks import Grid
from ..denoiser import DenoiserCall
from ._expint import exponential_moments, exponential_step
from ._multistep import check_history_before, final_order_cap, seed_path, step_order
from .base import History, SingleEvaluationSolver, Teleport, TwoStageSolver
from .registry import register

__all__ = ["DPMSolverPP", "DPMSolverPP2S"]


@register("ddim", solver_order=1, summary="DDIM (eta = 0) for a denoiser: DPM-Solver++ of order 1")
@register(
    "dpmpp_2m",
    solver_order=2,
    solver_type="midpoint",
    summary="DPM-Solver++(2M), midpoint type (k-diffusion sample_dpmpp_2m, diffusers' default)",
)
@register("dpmpp_2m_taylor", solver_order=2, solver_type="taylor", summary="DPM-Solver++(2M), taylor type")
@register(
    "dpmpp_3m",
    solver_order=3,
    solver_type="taylor",
    third_order="published",
    summary="DPM-Solver++(3M) as published (k-diffusion, diffusers, dpm-solver): second order",
)
@register(
    "dpmpp_3m_fixed",
    solver_order=3,
    solver_type="taylor",
    third_order="corrected",
    summary="DPM-Solver++(3M) with its third-order term corrected: third order",
)
@dataclass(frozen=True, slots=True)
class DPMSolverPP(SingleEvaluationSolver[History]):
    """DPM-Solver++ multistep (data prediction) in ``lambda = -log sigma``; orders 1, 2, 3.

    One step from ``sigma_s`` to ``sigma_t`` (``h = log(sigma_s / sigma_t)``, ``D_j`` the denoised
    values at the last ``p - 1`` levels)::

        x_t = (sigma_t / sigma_s) x_s - expm1(-h) D_s + sum_j w_j (D_j - D_s)

    * order 1 (``ddim``): no correction terms -- DDIM (eta = 0) written for a denoiser;
    * order 2, ``solver_type="midpoint"`` (``dpmpp_2m``, k-diffusion ``sample_dpmpp_2m``,
      dpm-solver 'dpmsolver' type, diffusers' default): ``w = expm1(-h) / (2 r)``, ``r = h_prev / h``;
    * order 2, ``solver_type="taylor"`` (``dpmpp_2m_taylor``, k-diffusion ``sample_dpmpp_2m_sde``
      with ``eta=0, solver_type='heun'``): the exact phi_2 integral of the linear interpolant;
    * order 3, ``third_order="published"`` (``dpmpp_3m``): the formula of dpm-solver,
      k-diffusion ``sample_dpmpp_3m_sde(eta=0)`` and diffusers, whose ``phi_3 D_2`` term is half of
      what third order needs -- it is a **second-order** method (measured: local slope 3, global
      order 2; docs/devdocs-derivations.md);
    * order 3, ``third_order="corrected"`` (``dpmpp_3m_fixed``): the exact phi-integral of the
      quadratic through the last three denoised values (exponential Adams-Bashforth 3) -- third order.

    The first steps of a run with empty history use orders 1, 2, ... (warm-up); the step to
    ``sigma = 0`` is ``x = D`` (no extra evaluation). ``solver_type`` sets the second-order update,
    including the warm-up step of 3M runs (k-diffusion: 'taylor'; diffusers: its ``solver_type``).

    Order: 1, 2, 2 (published 3M) or 3 with exact history; a cold start caps the global order at 2
    (the first step is DDIM). Cost: 1 denoiser evaluation per step. State: :class:`History` of the
    last ``solver_order - 1`` denoised values.

    Args:
        solver_order: number of denoised values combined per step (1, 2 or 3).
        solver_type: second-order coefficient, ``"midpoint"`` or ``"taylor"``.
        third_order: ``"corrected"`` (exact, third order) or ``"published"`` (reference-compatible).
        lower_order_final: lower the order to the number of remaining intervals at the end of the
            grid (stabilises few-step runs; docs/solvers.md).
        seed_history: after an analytic warm start, fill the history with the Gaussian's denoised
            values on its exact path above the start (docs/solvers.md#seeded-history-opt-in).

    References:
        Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
        arXiv 2211.01095 (Algorithm 2, multistep); code: LuChengTHU/dpm-solver
        ``multistep_dpm_solver_{second,third}_order_update`` and k-diffusion ``sample_dpmpp_2m``,
        ``sample_dpmpp_3m_sde`` (MIT). The 3M correction: docs/devdocs-derivations.md.
    """

    # The variation-of-constants formula holds for steps of either sign in lambda (h < 0 upwards).
    supports_inversion: ClassVar[bool] = True

    solver_order: int = 2
    solver_type: Literal["midpoint", "taylor"] = "midpoint"
    third_order: Literal["corrected", "published"] = "corrected"
    lower_order_final: bool = False
    seed_history: bool = False

    def __post_init__(self) -> None:
        # Types (and the Literal choices) are checked before this: gaussport.loop.check_options.
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3 for DPM-Solver++; got {self.solver_order!r}.")

    @property
    def order(self) -> int:
        if self.solver_order == 3 and self.third_order == "published":
            return final_order_cap(2, self.lower_order_final)
        return final_order_cap(self.solver_order, self.lower_order_final)

    @property
    def cold_start_order(self) -> int:
        return min(self.order, 2)

    def init(self, x: Tensor, sigmas: Grid, teleport: Teleport | None = None) -> History:
        if not self.seed_history:
            return History()
        seeds = seed_path(teleport, x, sigmas, self.solver_order - 1)
        return History(tuple(s for s, _, _ in seeds), tuple(d for _, _, d in seeds))

    def moments(self, h: float, p: int) -> list[float]:
        """Weights of ``h^k D^{(k)}``, ``k = 1..p-1``, in a step of order ``p`` (see the class docstring)."""
        moments = exponential_moments(h, p - 1)
        if p == 2 and self.solver_type == "midpoint":
            moments[0] = -0.5 * math.expm1(-h)  # (1 - e^-h) / 2 = h phi_1(-h) / 2 instead of h phi_2(-h)
        if p == 3 and self.third_order == "published":
            moments[1] *= 0.5  # the published D_2 estimates h^2 D''/2 where h^2 D'' is needed
        return moments

    def advance(
        self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: History
    ) -> tuple[Tensor, History]:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        check_history_before(state.sigmas, sigma, sigma_next)
        p = step_order(self.solver_order, len(state), sigmas, i, self.lower_order_final)
        moments = self.moments(math.log(sigma / sigma_next), p)
        x_next = exponential_step(x, denoised, sigma, sigma_next, state.last(p - 1), moments)
        return x_next, state.push(sigma, denoised, keep=self.solver_order - 1)


@register(
    "dpmpp_2s",
    r=0.5,
    summary="DPM-Solver++(2S), single-step (k-diffusion sample_dpmpp_2s_ancestral, eta = 0)",
)
@dataclass(frozen=True, slots=True)
class DPMSolverPP2S(TwoStageSolver):
    """DPM-Solver++(2S): singlestep second order in ``lambda = -log sigma``, data prediction.

    Each step evaluates ``D`` at ``sigma_s`` and at the intermediate level
    ``sigma_u = sigma_s e^{-r h}`` reached by a DDIM step, then
    ``x_t = (sigma_t / sigma_s) x_s - expm1(-h) ((1 - 1/(2r)) D_s + D_u / (2r))`` ('dpmsolver' type;
    for ``r = 1/2`` only ``D_u`` enters). The step to ``sigma = 0`` is ``x = D(x, sigma_s)``.

    Order 2; 2 denoiser evaluations per step (1 on a final step to 0, so ``2n - 1`` for ``n``
    intervals ending in 0); stateless.

    Args:
        r: position of the intermediate level as a fraction of the step in lambda, in (0, 1].

    References:
        Lu et al., "DPM-Solver++", arXiv 2211.01095, Algorithm 1 (DPM-Solver++(2S)); k-diffusion
        ``sample_dpmpp_2s_ancestral`` with ``eta=0`` (same update; it still draws from the global RNG).
    """

    supports_inversion: ClassVar[bool] = True

    r: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.r <= 1.0:  # a finite float: checked before this (gaussport.loop.check_options)
            raise ValueError(f"r must lie in (0, 1] (fraction of the step in lambda); got {self.r!r}.")

    @property
    def order(self) -> int:
        return 2

    def second_stage(
        self, denoiser: DenoiserCall, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float
    ) -> Tensor:
        h = math.log(sigma / sigma_next)
        sigma_mid = sigma * math.exp(-self.r * h)
        x_mid = exponential_step(x, denoised, sigma, sigma_mid, [], [])
        denoised_mid = denoiser(x_mid, sigma_mid)
        moment = -0.5 * math.expm1(-h)  # the 'dpmsolver' (midpoint) second-order coefficient
        return exponential_step(x, denoised, sigma, sigma_next, [(sigma_mid, denoised_mid)], [moment])
