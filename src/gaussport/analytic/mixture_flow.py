"""The PF-ODE flow of an analytic mixture, integrated numerically: a warm start with zero model calls.

A :class:`~gaussport.analytic.GaussianMixture` or :class:`~gaussport.analytic.EmpiricalMixture` has
an exact denoiser but no closed-form flow map. :class:`MixtureFlow` integrates its probability-flow
ODE ``dx/dsigma = (x - D(x, sigma)) / sigma`` in ``t = log sigma``, where it reads

    ``dx/dt = x - D(x, e^t)``,

with the Dormand-Prince 5(4) pair and an adaptive step (the embedded 4th-order solution's
difference is the local error estimate), all in float64. The mixture's denoiser is cheap (no
network), so a tight tolerance costs milliseconds to seconds per batch, never a model call. Its
``flow`` and ``__call__`` are what :func:`gaussport.sample` needs of a warm start. The maths and
measurements: docs/mixture-teleport.md.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from .._checks import as_int
from .covariance import factor_dtype

__all__ = ["MixtureFlow"]

logger = logging.getLogger("gaussport")

# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comp. Appl. Math. 6(1):
# the nodes, the stage weights, the 5th-order weights (b, also the last stage row: FSAL) and the
# difference of the 5th- and 4th-order weights (the local error estimate).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_E = (
    35 / 384 - 5179 / 57600,
    0.0,
    500 / 1113 - 7571 / 16695,
    125 / 192 - 393 / 640,
    -2187 / 6784 + 92097 / 339200,
    11 / 84 - 187 / 2100,
    -1 / 40,
)
METHODS = ("dopri5", "rk4")


class MixtureFlow:
    """A warm start that moves states along a mixture's PF-ODE by numerical integration.

    Order: ``dopri5`` takes 6 denoiser evaluations of the mixture per accepted step (first-same-
    as-last); its step count grows like ``rtol^(-1/5)`` per unit of ``log sigma``. ``rk4`` takes
    ``steps_per_unit`` fixed steps per unit of ``log sigma`` (4 evaluations each) and exists to
    check the adaptive one. One step size serves the whole batch (the worst sample decides), so a
    batch costs as many mixture calls as its hardest sample.
    Reference: Dormand & Prince (1980); Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4-5
    (error norm and step-size control).

    Args:
        mixture: an exact denoiser ``D(x, sigma)`` with a ``shape`` (e.g. a
            :class:`~gaussport.analytic.GaussianMixture` or :class:`~gaussport.analytic.EmpiricalMixture`;
            a :class:`~gaussport.analytic.Gaussian` too, whose closed form checks this integrator).
        rtol: relative tolerance of the local error (per element, RMS over a sample).
        atol: absolute tolerance, in the units of the data.
        method: ``"dopri5"`` (adaptive) or ``"rk4"`` (fixed steps).
        steps_per_unit: the ``rk4`` steps per unit of ``log sigma``.
        max_steps: the ``dopri5`` step budget per :meth:`flow` call (accepted and rejected).

    Attributes:
        last_evaluations: mixture-denoiser calls of the latest :meth:`flow` (a cost report).
        last_steps: accepted steps of the latest :meth:`flow`.
    """

    def __init__(
        self,
        mixture: Any,
        *,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        method: str = "dopri5",
        steps_per_unit: int = 50,
        max_steps: int = 100_000,
    ) -> None:
        if isinstance(mixture, type) or not callable(mixture) or not hasattr(mixture, "shape"):
            raise TypeError(
                "MixtureFlow takes an exact denoiser instance with a sample shape, e.g. a GaussianMixture "
                f"or an EmpiricalMixture; got {mixture!r:.60}."
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        for name, value in (("rtol", rtol), ("atol", atol)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a real number; got {value!r}.")
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value}.")
        if rtol == 0.0 and atol == 0.0:
            raise ValueError("rtol and atol are both 0: no step could pass; give a positive tolerance.")
        self.mixture = mixture
        self.rtol, self.atol = float(rtol), float(atol)
        self.method = method
        self.steps_per_unit = as_int(steps_per_unit, "steps_per_unit", minimum=1)
        self.max_steps = as_int(max_steps, "max_steps", minimum=1)
        self.last_evaluations = 0
        self.last_steps = 0
        self._statistics: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mixture.shape)

    def __repr__(self) -> str:
        tol = (
            f"rtol={self.rtol:g}, atol={self.atol:g}"
            if self.method == "dopri5"
            else (f"steps_per_unit={self.steps_per_unit}")
        )
        return f"MixtureFlow({self.mixture!r}, method={self.method!r}, {tol})"

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The mixture's exact denoiser ``D(x, sigma)`` (what callbacks and warm-started solvers read)."""
        return self.mixture(x, sigma)

    @property
    def statistics(self) -> Any:
        """The moment-matched Gaussian, computed once: what a statistics-based solver builds EMS from."""
        if self._statistics is None:
            self._statistics = self.moments()
        return self._statistics

    def moments(self) -> Any:
        """The mixture's moment-matched Gaussian (for statistics-based solvers such as DPM-Solver-v3)."""
        if not callable(getattr(self.mixture, "moments", None)):
            raise TypeError(f"{type(self.mixture).__name__} has no moments(); it cannot give a Gaussian.")
        return self.mixture.moments()

    # ----------------------------------------------------------------- the flow map
    def _velocity(self, y: Tensor, t: float, shape: tuple[int, ...]) -> Tensor:
        """``dy/dt = y - D(y, e^t)`` in ``t = log sigma``, flat ``[B, d]``."""
        self.last_evaluations += 1
        sigma = torch.full((y.shape[0],), math.exp(t), dtype=y.dtype, device=y.device)
        d = self.mixture(y.reshape(shape), sigma).reshape(y.shape).to(y.dtype)
        return y - d

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The state at ``sigma_to`` of the PF-ODE trajectory through ``x`` at ``sigma_from`` (either way).

        Integrated in float64 (float32 on MPS); returned in ``x``'s dtype. Zero model calls.

        Raises:
            ValueError: non-finite or non-positive levels (a mixture's flow to or from ``sigma = 0``
                is not a smooth map in ``log sigma``; teleports end at a positive level), a state of
                the wrong shape, or a ``dopri5`` run that exceeds ``max_steps``.
        """
        s0, s1 = float(sigma_from), float(sigma_to)
        if not (math.isfinite(s0) and math.isfinite(s1)) or s0 <= 0 or s1 <= 0:
            raise ValueError(
                f"MixtureFlow.flow needs finite noise levels > 0; got sigma_from={s0}, sigma_to={s1} "
                "(teleport to a positive sigma_skip; the solver takes the rest to 0)."
            )
        if not isinstance(x, Tensor) or not x.is_floating_point() or tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"x must be a floating-point tensor [B, *{self.shape}]; got "
                f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}."
            )
        self.last_evaluations = 0
        self.last_steps = 0
        if s0 == s1 or x.shape[0] == 0:
            return x.clone()
        y = x.detach().reshape(x.shape[0], -1).to(factor_dtype(x.device))
        t0, t1 = math.log(s0), math.log(s1)
        with torch.no_grad():
            if self.method == "rk4":
                y = self._rk4(y, t0, t1, tuple(x.shape))
            else:
                y = self._dopri5(y, t0, t1, tuple(x.shape))
        logger.debug(
            "MixtureFlow %g -> %g: %d steps, %d mixture calls", s0, s1, self.last_steps, self.last_evaluations
        )
        return y.reshape(x.shape).to(x.dtype)

    def _rk4(self, y: Tensor, t0: float, t1: float, shape: tuple[int, ...]) -> Tensor:
        n = max(1, math.ceil(abs(t1 - t0) * self.steps_per_unit))
        h = (t1 - t0) / n
        for k in range(n):
            t = t0 + k * h
            k1 = self._velocity(y, t, shape)
            k2 = self._velocity(y + 0.5 * h * k1, t + 0.5 * h, shape)
            k3 = self._velocity(y + 0.5 * h * k2, t + 0.5 * h, shape)
            k4 = self._velocity(y + h * k3, t + h, shape)
            y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        self.last_steps = n
        return y

    def _error_norm(self, err: Tensor, y: Tensor, y_new: Tensor) -> float:
        scale = self.atol + self.rtol * torch.maximum(y.abs(), y_new.abs())
        return float(((err / scale) ** 2).mean(-1).sqrt().max())  # RMS per sample, worst sample

    def _dopri5(self, y: Tensor, t0: float, t1: float, shape: tuple[int, ...]) -> Tensor:
        direction = 1.0 if t1 > t0 else -1.0
        span = abs(t1 - t0)
        f = self._velocity(y, t0, shape)
        # Initial step (Hairer, Norsett & Wanner, II.4): h ~ 0.01 |y| / |f|, capped by the span.
        scale = self.atol + self.rtol * y.abs()
        d0 = float(((y / scale) ** 2).mean().sqrt())
        d1 = float(((f / scale) ** 2).mean().sqrt())
        h = min(span, 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-3)
        t, done, tries = t0, 0.0, 0
        while done < span:
            if tries >= self.max_steps:
                raise ValueError(
                    f"MixtureFlow: {self.max_steps} steps did not reach sigma = {math.exp(t1):g} "
                    f"(stuck at sigma = {math.exp(t):g}); loosen rtol/atol or raise max_steps."
                )
            tries += 1
            h = min(h, span - done)
            hs = direction * h
            stages = [f]
            for i in range(1, 7):
                inc = sum(a * k for a, k in zip(_A[i], stages, strict=True) if a != 0.0)
                stages.append(self._velocity(y + hs * inc, t + _C[i] * hs, shape))
            y_new = y + hs * sum(b * k for b, k in zip(_B, stages, strict=True) if b != 0.0)
            err = hs * sum(e * k for e, k in zip(_E, stages, strict=True) if e != 0.0)
            norm = self._error_norm(err, y, y_new)
            if not math.isfinite(norm):
                h *= 0.2
                continue
            if norm <= 1.0:
                done = span if span - done - h <= 1e-14 * span else done + h
                t = t0 + direction * done
                y, f = y_new, stages[6]  # FSAL: the last stage is the velocity at the new point
                self.last_steps += 1
            # Standard controller: safety 0.9, order 5, growth limited to [0.2, 5].
            h *= min(5.0, max(0.2, 0.9 * norm ** (-0.2))) if norm > 0 else 5.0
        return y
