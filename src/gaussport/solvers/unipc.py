"""UniPC: the unified predictor (UniP) and corrector (UniC) in data-prediction form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from torch import Tensor

from .._checks import Grid
from ._expint import exponential_moments, exponential_step
from ._multistep import check_history_before, final_order_cap, seed_path, step_order
from .base import History, SingleEvaluationSolver, Teleport
from .registry import register

__all__ = ["UniPC", "UniPCState"]


@dataclass(frozen=True, slots=True)
class UniPCState:
    """What UniPC carries between steps.

    Attributes:
        history: denoised values at the last ``solver_order`` levels, most recent last; the newest is
            the evaluation at the level the last prediction started from.
        x_prev: the (corrected) state at ``history.sigmas[-1]`` that the last prediction started
            from; ``None`` when there is nothing to correct (first step, corrector off, seeded start).
        order_prev: the order of that prediction, which the corrector reuses.
    """

    history: History = field(default_factory=History)
    x_prev: Tensor | None = None
    order_prev: int = 0


@register("unipc_bh1", variant="bh1", solver_order=3, summary="UniPC-3 with B(h) = h (bh1)")
@register("unipc_bh2", variant="bh2", solver_order=2, summary="UniPC-2 with B(h) = e^h - 1 (bh2)")
@register(
    "unipc_vary_coeff",
    variant="vary_coeff",
    solver_order=3,
    summary="UniPC-3 with varying coefficients (UniPC_v, with the wl-zhao/UniPC#10 fix)",
)
@dataclass(frozen=True, slots=True)
class UniPC(SingleEvaluationSolver[UniPCState]):
    """UniPC multistep predictor-corrector in ``lambda = -log sigma`` (data prediction).

    Each step receives ``D(x_i, sigma_i)`` at the *predicted* state ``x_i`` and

    1. **corrects** ``x_i`` (UniC): re-does the previous step from ``x_{i-1}`` with the new value
       ``D_i`` included in the interpolation (order of that step + 1, no extra evaluation);
    2. **predicts** ``x_{i+1}`` from the corrected ``x_i`` (UniP, order ``p``) with ``D_i`` and the
       last ``p - 1`` stored values.

    The stored value at ``sigma_i`` stays ``D(x_i)`` at the uncorrected point (never re-evaluated).
    Both are ``x_t = (sigma_t / sigma_s) x_s - expm1(-h) D_s + sum_j w_j (D_j - D_s)`` with the
    weights of the exact phi-function integral of the interpolating polynomial, except where the
    reference hard-codes ``rho = 1/2`` (UniP-2 and UniC-1 with one node): there the weight of
    ``h D'`` is ``-B(h)/2`` with ``B(h) = -h`` (``variant="bh1"``) or ``expm1(-h)`` (``"bh2"``; UniP-2
    is then DPM-Solver++(2M)). ``"vary_coeff"`` is UniPC_v with the corrector fix of wl-zhao/UniPC#10
    (all rows of ``C^{-1}``, ``D_t`` included): algebraically the linear solve at every order, i.e.
    no hard-coded coefficient. Elsewhere B(h) cancels and the variants agree.

    The corrector is not applied after the last step (it would cost an evaluation), so a run of
    ``n`` intervals costs ``n`` evaluations; the step to ``sigma = 0`` is ``x = D`` (finite for every
    variant, unlike diffusers' bh1, which gives NaN there).

    Order: ``solver_order + 1`` with the corrector, ``solver_order`` without (exact history); a cold
    start caps it at 3 (corrected DDIM first step) or 2 without the corrector; ``lower_order_final``
    caps it at 2 (a first-order last step). Cost: 1 evaluation per step. State: :class:`UniPCState`.

    Args:
        solver_order: predictor order p (1 to 3 as in the paper; 4 also works).
        variant: ``"bh1"``, ``"bh2"`` or ``"vary_coeff"`` (see above). Registered defaults follow the
            paper's experiments: ``unipc_bh1`` order 3 (unconditional), ``unipc_bh2`` order 2 (guided).
        corrector: apply UniC (no extra evaluations).
        lower_order_final: step ``i`` of ``n`` intervals uses order at most ``n - i`` (the rule of
            wl-zhao/UniPC and diffusers, where it is on by default; off here because it did not help
            in docs/benchmarks-solvers.md and caps the order at 2 on grids ending above 0).
        seed_history: after an analytic warm start, fill the history with the Gaussian's denoised
            values on its exact path above the start (the start itself is not corrected).

    References:
        Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
        Models", NeurIPS 2023 (arXiv 2302.04867), Algorithms 2-3; code: wl-zhao/UniPC ``uni_pc.py``
        (``multistep_uni_pc_bh_update``, MIT) and diffusers ``UniPCMultistepScheduler`` (Apache-2.0).
    """

    # Predictor and corrector are exponential integrators in lambda: valid for h < 0 (upwards) too.
    supports_inversion: ClassVar[bool] = True

    solver_order: int = 3
    variant: Literal["bh1", "bh2", "vary_coeff"] = "bh1"
    corrector: bool = True
    lower_order_final: bool = False
    seed_history: bool = False

    def __post_init__(self) -> None:
        if self.solver_order not in (1, 2, 3, 4):
            raise ValueError(f"solver_order must be 1, 2, 3 or 4 for UniPC; got {self.solver_order!r}.")

    @property
    def order(self) -> int:
        return final_order_cap(self.solver_order + (1 if self.corrector else 0), self.lower_order_final)

    @property
    def cold_start_order(self) -> int:
        return min(self.order, 3 if self.corrector else 2)

    def init(self, x: Tensor, sigmas: Grid, teleport: Teleport | None = None) -> UniPCState:
        if not self.seed_history:
            return UniPCState()
        seeds = seed_path(teleport, x, sigmas, self.solver_order - 1)
        return UniPCState(History(tuple(s for s, _, _ in seeds), tuple(d for _, _, d in seeds)))

    def moments(self, h: float, nodes: int) -> list[float]:
        """Weights of ``h^k D^{(k)}`` for an update with ``nodes`` interpolation nodes besides ``D_s``."""
        if nodes == 1 and self.variant != "vary_coeff":
            # UniPC's hard-coded rho = 1/2 (UniP-2, UniC-1): -B(h) rho in place of h phi_2(-h).
            return [0.5 * h if self.variant == "bh1" else -0.5 * math.expm1(-h)]
        return exponential_moments(h, nodes)

    def advance(
        self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: UniPCState
    ) -> tuple[Tensor, UniPCState]:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        hist = state.history
        check_history_before(hist.sigmas, sigma, sigma_next)
        if self.corrector and state.x_prev is not None and state.order_prev >= 1:
            # UniC: redo the step hist.sigmas[-1] -> sigma with the new value as an extra node.
            p = state.order_prev
            *earlier, (sigma_prev, denoised_prev) = hist.last(p)
            moments = self.moments(math.log(sigma_prev / sigma), p)
            nodes = earlier + [(sigma, denoised)]
            x = exponential_step(state.x_prev, denoised_prev, sigma_prev, sigma, nodes, moments)
        p = step_order(self.solver_order, len(hist), sigmas, i, self.lower_order_final)
        moments = self.moments(math.log(sigma / sigma_next), p - 1)
        x_next = exponential_step(x, denoised, sigma, sigma_next, hist.last(p - 1), moments)
        history = hist.push(sigma, denoised, keep=self.solver_order)
        return x_next, UniPCState(history, x if self.corrector else None, p)
