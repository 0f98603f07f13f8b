"""DPM-Solver-v3 (Zheng et al., NeurIPS 2023) in sigma/VE coordinates, with analytic EMS."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from torch import Tensor

from .._checks import Grid
from ..ems import EMS, Coefficients, StepCoefficients
from .base import StatisticsSolver, Teleport
from .registry import register

__all__ = ["DPMSolverV3", "V3State", "taylor_weights"]

logger = logging.getLogger("gaussport")

_MAX_ORDER = 3


def taylor_weights(lambdas: list[float], variant: str) -> list[list[float]]:
    """Weights ``W`` with ``g^(k)(lambda_0) ~ sum_i W[k - 1][i] g_i`` for ``k = 1..n``.

    ``lambdas = [lambda_0, ..., lambda_n]`` are the levels of the points ``g_0..g_n``, the first
    being the expansion point. Python floats in, Python floats out (no tensors, no host syncs).

    * ``"normal"``: the Taylor polynomial of degree ``n`` through all points (the Vandermonde
      system ``sum_k delta_i^k g^(k) / k! = g_i - g_0`` of the reference's
      ``compute_high_order_derivatives``); error O(h^(n + 1 - k)) for ``g^(k)``.
    * ``"pseudo"``: the reference's pseudo-order estimate (paper Thm 3.4): Neville divided
      differences ``D^k_j = (D^{k-1}_j - D^{k-1}_{j+1}) / (lambda_j - lambda_{j+k})`` in the
      order the points are given, ``g^(k) = k! D^k_0``, so ``g^(k)`` uses only ``k + 1`` points.
    """
    n = len(lambdas) - 1
    if n <= 0:
        return []
    if variant == "pseudo":
        # Divided differences of unit vectors give the weights of each g_i.
        table = [[[1.0 if i == j else 0.0 for i in range(n + 1)] for j in range(n + 1)]]
        for k in range(1, n + 1):
            prev = table[-1]
            row = []
            for j in range(n + 1 - k):
                denom = lambdas[j] - lambdas[j + k]
                row.append([(prev[j][i] - prev[j + 1][i]) / denom for i in range(n + 1)])
            table.append(row)
        return [[math.factorial(k) * w for w in table[k][0]] for k in range(1, n + 1)]
    deltas = [lam - lambdas[0] for lam in lambdas[1:]]
    vandermonde = np.array([[d ** (k + 1) for k in range(n)] for d in deltas], dtype=np.float64)
    inverse = np.linalg.inv(vandermonde)  # [k, i]
    weights = []
    for k in range(n):
        row = [float(inverse[k, i]) * math.factorial(k + 1) for i in range(n)]
        weights.append([-sum(row)] + row)
    return weights


@dataclass(frozen=True, slots=True)
class V3State:
    """What DPM-Solver-v3 carries between steps.

    Attributes:
        ems: the statistics of the run.
        table: the precomputed integrals for the levels of the run (:class:`gaussport.ems.Coefficients`).
        position: index of the current level in ``table.sigmas``.
        x: the (corrected) state at the previous level, for the corrector; ``None`` at the start.
        previous: the integrals of the previous step (the corrector re-takes it).
        g: the history ``g_j`` (newest first) transported to the previous level -- the paper's
            ``g`` with ``f_j = sigma_j eps_j - l_j x_j`` kept fixed under correction.
        lambdas: ``lambda_j`` of the history points, newest first.
        last_order: the predictor order of the previous step (0 at the start).
    """

    ems: EMS
    table: Coefficients
    position: int = 0
    x: Tensor | None = None
    previous: StepCoefficients | None = None
    g: tuple[Tensor, ...] = ()
    lambdas: tuple[float, ...] = ()
    last_order: int = 0


def _degenerate_over(x: Tensor, sigmas: Grid) -> EMS:
    """The degenerate EMS over the positive levels of ``sigmas`` (around a single level: ``[s/2, 2s]``)."""
    positive = [s for s in sigmas if s > 0.0]
    shape = (1,) * (x.ndim - 1)
    if not positive:
        return EMS.degenerate(shape)
    low, high = min(positive), max(positive)
    if low == high:
        low, high = 0.5 * low, 2.0 * high
    return EMS.degenerate(shape, sigma_min=low, sigma_max=high)


def _combine(x_s: Tensor, step: StepCoefficients, g: list[Tensor], weights: list[list[float]]) -> Tensor:
    """``decay * (x_s - phi_0 g_0 - bias - sum_k phi_k g^(k))`` (paper eq. 9 with a Taylor ``g``)."""
    acc = step.phi[0] * g[0] + step.bias
    for k, row in enumerate(weights, start=1):
        derivative = row[0] * g[0]
        for w, gi in zip(row[1:], g[1:], strict=True):
            derivative = derivative + w * gi
        acc = acc + step.phi[k] * derivative
    return step.decay * (x_s - acc)


@register(
    "dpm_solver_v3",
    summary="DPM-Solver-v3: multistep predictor-corrector on empirical model statistics (EMS)",
)
@dataclass(frozen=True, slots=True)
class DPMSolverV3(StatisticsSolver[V3State]):
    """DPM-Solver-v3: a multistep predictor-corrector built on empirical model statistics (EMS).

    With EMS ``l, s, b`` (per-dimension curves over ``lambda = -log sigma``, :class:`gaussport.ems.EMS`)
    the PF-ODE ``dx/dlambda = D - x`` is rewritten (alpha = 1 in VE/EDM coordinates) as
    ``dx/dlambda = -l x - f`` with ``f = (1 - l) x - D``, and solved exactly up to a Taylor
    expansion of ``g = exp(-int s) f - int exp(-int s) b`` (paper eq. 9)::

        x_t = exp(-int_s^t l) (x_s - phi_0 g_s - bias - sum_k phi_k g^(k)_s)

    The integrals ``phi_k = int exp(int (l + s)) (lambda - lambda_s)^k / k!`` and ``bias`` are
    pre-integrated once per run over the EMS grid plus the run's own levels (nothing is snapped:
    the run integrates exactly the grid it was given) and cached by what they depend on (EMS,
    levels, degree, rule). ``g^(k)`` comes from the last ``solver_order`` points (``predictor="normal"``:
    Taylor/Vandermonde; ``"pseudo"``: the paper's pseudo-order divided differences). The corrector
    (paper Alg. 2) re-takes the previous step with the new evaluation included in the fit, at the
    start of a step, with the evaluation at the current point, so it costs nothing; its order is
    the previous predictor's plus one with ``corrector="pseudo"`` and it is used only when that is
    > 1 (with ``"normal"`` the first correction happens at the third level). There is no
    correction after the last step. Warm-up orders 1, 2, ...; ``lower_order_final`` caps the
    order at the number of remaining steps. A step to sigma = 0 is ``x = D`` (no evaluation at 0).

    EMS: with ``ems=None``, :func:`gaussport.sample` and the adapters give the solver the analytic
    EMS of the warm-start Gaussian (built over the run's range with ``ems_intervals`` intervals by
    :func:`gaussport.sampling.with_warm_start_statistics`, also when the teleport is a no-op);
    without a Gaussian the solver uses the degenerate EMS ``l = 1, s = b = 0``, with which the
    method is DPM-Solver++ ('taylor' type; exactly, with the exponential rule). Both are built over
    the run's own positive levels, so every valid grid runs (levels above 80 or below 0.002, a
    single level). The solver never builds statistics from a model itself. Explicit EMS must cover
    the run's noise levels (else a ``ValueError`` names both ranges and the fix); a run starting
    mid-way integrates the EMS over its own sub-range (never re-mapped,
    docs/ems.md#runs-that-start-mid-way).

    Continuing a run (``solve(..., state=sol.state)``): the state's EMS go on while they cover the
    new levels; degenerate EMS are rebuilt over the new levels and the run equals one uninterrupted
    run (without ``lower_order_final``); other EMS that do not cover them (the analytic EMS of a
    :func:`gaussport.sample` run cover only its levels) give way to the solver's own EMS for the
    new levels, and the multistep history, computed with the old curves, restarts (logged at INFO).

    Order: the predictor's local order is ``solver_order + 1``; the first (warm-up) step and,
    with ``lower_order_final``, the last step are first order, which caps the global order:
    ``self.order = min(solver_order, 2)``, as measured on grids ending at sigma_min > 0
    (docs/ems.md lists the measurements per configuration; the higher local order shows in the
    error constant).
    Cost: 1 denoiser evaluation per step (NFE = steps, with or without the corrector).
    State: the last ``solver_order`` values of ``g``, the corrected previous state and the
    run's precomputed integrals (:class:`V3State`).

    Args:
        solver_order: the order of the multistep predictor, 1..3 (the reference's ``order``; the
            paper uses 3 unconditionally, 2 with guidance).
        predictor: ``"normal"`` or ``"pseudo"`` (reference: ``p_pseudo``).
        corrector: ``None``, ``"normal"`` (reference: ``use_corrector=True, c_pseudo=False``) or
            ``"pseudo"`` (``c_pseudo=True``: one order more, from the new point).
        lower_order_final: cap the predictor order at the number of remaining steps.
        half: if given, correct only at levels ``sigma > half`` -- the reference code's
            ``half=True`` criterion ``t > 0.5`` (for its EDM schedule ``t = sigma``, i.e. ``half=0.5``;
            the paper's text says the opposite, "corrector only for t <= 0.5").
        ems: :class:`gaussport.ems.EMS`; ``None`` (from the warm start, above) or ``"degenerate"``.
        ems_intervals: intervals of the analytic EMS built from a warm start.
        quadrature: ``"exponential"`` (exact for constant ``l + s`` and ``s``) or ``"trapezoid"``
            (the reference's rule, for parity); docs/ems.md compares them.

    References:
        Zheng, Lu, Chen, Zhu, "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model
        Statistics", NeurIPS 2023 (arXiv 2310.13268), eq. 9, Algorithms 1-2; formulas ported from
        thu-ml/DPM-Solver-v3 ``dpm_solver_v3.py`` (MIT), written in VE coordinates here.
    """

    # Not on increasing grids: the EMS integrals (gaussport.ems.EMS.coefficients) and the analytic EMS
    # built for a run (gaussport.sampling.with_warm_start_statistics) are tabulated along decreasing
    # levels, and the corrector's ``half`` criterion is one-sided.
    supports_inversion: ClassVar[bool] = False
    option_hints: ClassVar[dict[str, str]] = {
        "half": "half is a noise level (the corrector runs only above it); the reference's half=True "
        "with its EDM schedule is half=0.5.",
        "ems": "Build EMS with gaussport.ems.analytic_ems / estimate_ems / EMS.load.",
    }

    # Types are checked when the solver is built (gaussport.loop.check_options); ranges below.
    solver_order: int = 3
    predictor: Literal["normal", "pseudo"] = "normal"
    corrector: Literal["normal", "pseudo"] | None = "normal"
    lower_order_final: bool = True
    half: float | None = None
    ems: EMS | Literal["degenerate"] | None = None
    ems_intervals: int = 1200
    quadrature: Literal["exponential", "trapezoid"] = "exponential"

    def __post_init__(self) -> None:
        if not 1 <= self.solver_order <= _MAX_ORDER:
            raise ValueError(f"solver_order must be 1, 2 or 3; got {self.solver_order!r}.")
        if self.half is not None and self.half < 0.0:
            raise ValueError(
                f"half must be a noise level >= 0 (the corrector runs only above it) or None; "
                f"got {self.half!r}."
            )
        if self.ems_intervals < 1:
            raise ValueError(f"ems_intervals must be a positive integer; got {self.ems_intervals!r}.")

    # ------------------------------------------------------------------ set-up
    @property
    def order(self) -> int:
        """The global order, ``min(solver_order, 2)``: the warm-up step is first order."""
        return min(self.solver_order, 2)

    @property
    def _degree(self) -> int:
        return self.solver_order - 1 + (1 if self.corrector == "pseudo" else 0)

    def statistics(self, x: Tensor, sigmas: Grid) -> EMS:
        """The EMS a run over ``sigmas`` from ``x`` uses: ``ems`` if given, else the degenerate EMS.

        The degenerate EMS is constant, so it is built over exactly the run's positive levels,
        whatever they are (a single level gets a range around it): every valid grid runs.
        """
        if isinstance(self.ems, EMS):
            return self.ems
        logger.debug("dpm_solver_v3: no EMS given; degenerate EMS (DPM-Solver++)")
        return _degenerate_over(x, sigmas)

    def _statistics_for(self, state: V3State, x: Tensor, sigmas: Grid) -> EMS:
        """The EMS of a continued run (``solve(..., state=...)``) over ``sigmas``.

        The state's EMS if it covers the new levels (the history ``g`` was computed with it); else
        a degenerate one carries over to a degenerate one over the new levels (``l, s, b`` are the
        same constants at every level, and so is the history); else the solver's own EMS for the
        new levels (:meth:`statistics`: ``ems`` if given, which must cover them, else degenerate).
        """
        if state.ems.covers(sigmas):
            return state.ems
        if state.ems.source == "degenerate" and not isinstance(self.ems, EMS):
            return _degenerate_over(x, sigmas)
        return self.statistics(x, sigmas)

    def init(self, x: Tensor, sigmas: Grid, teleport: Teleport | None = None) -> V3State:
        ems = self.statistics(x, sigmas)
        ems.check_shape(tuple(x.shape[1:]))
        return V3State(ems, self._table(ems, sigmas, x))

    def _table(self, ems: EMS, sigmas: Grid, x: Tensor) -> Coefficients:
        return ems.coefficients(
            sigmas, degree=self._degree, rule=self.quadrature, device=x.device, dtype=x.dtype
        )

    # ------------------------------------------------------------------ the step
    def advance(
        self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: V3State
    ) -> tuple[Tensor, V3State]:
        table, pos = state.table, state.position
        if not (
            pos + 1 < len(table.sigmas)
            and table.sigmas[pos] == sigmas[i]
            and table.sigmas[pos + 1] == sigmas[i + 1]
        ):
            # A continued run (solve(..., state=...)) on a new grid: integrate its levels. The
            # history (g values, corrected state, previous step) carries over unchanged while the
            # EMS do; with other EMS it was computed from other curves, so the run warms up anew.
            ems = self._statistics_for(state, x, sigmas[i:])
            ems.check_shape(tuple(x.shape[1:]))
            if ems is not state.ems and not (ems.source == state.ems.source == "degenerate"):
                logger.info(
                    "dpm_solver_v3: the continued run's levels leave the EMS of its state "
                    "(sigma in [%g, %g]); its history restarts with the EMS of the new levels",
                    state.ems.sigma_min,
                    state.ems.sigma_max,
                )
                state = V3State(ems, state.table)
            table, pos = self._table(ems, sigmas[i:], x), 0
            state = dataclasses.replace(state, ems=ems)
        lam = table.lambdas[pos]
        f = (1.0 - table.l[pos]) * x - denoised

        # Corrector (paper Alg. 2): re-take the previous step with f at this level in the fit.
        x_here = x
        previous = state.previous
        if (
            previous is not None
            and state.x is not None
            and self.corrector is not None
            and (self.half is None or sigmas[i] > self.half)
        ):
            corr_order = state.last_order + (1 if self.corrector == "pseudo" else 0)
            if corr_order > 1:
                g_new = f / previous.s_gain - previous.b_gain  # this level's g, seen from the previous one
                points = [state.g[0], g_new, *state.g[1 : corr_order - 1]]
                lams = [state.lambdas[0], lam, *state.lambdas[1 : corr_order - 1]]
                x_here = _combine(state.x, previous, points, taylor_weights(lams, self.corrector))

        # Move the history to this level: g_j <- exp(S_here - S_prev) (g_j + B_prev(lambda_here)).
        keep = self.solver_order
        if previous is not None:
            moved = tuple(previous.s_gain * (g + previous.b_gain) for g in state.g[: keep - 1])
        else:
            moved = ()
        history = (f, *moved)
        lambdas = (lam, *state.lambdas[: keep - 1])

        # Predictor from this level to the next.
        p = min(self.solver_order, len(history))
        if self.lower_order_final:
            last = len(sigmas) - 1 if sigmas[-1] > 0.0 else len(sigmas) - 2
            p = min(p, last - i)
        step = table.steps[pos]
        x_next = _combine(x_here, step, list(history[:p]), taylor_weights(list(lambdas[:p]), self.predictor))
        return x_next, V3State(state.ems, table, pos + 1, x_here, step, history, lambdas, p)
