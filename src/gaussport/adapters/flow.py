"""Rectified-flow / flow-matching models (SD3, Flux, ComfyUI ``CONST``): ``x_t = (1 - t) x0 + t eps``.

The model predicts the velocity ``v = dx_t/dt = eps - x0`` (``"flow"``), or ``x0``/``eps``. In VE
coordinates (docs/conventions.md#coordinates-and-the-ode) the same process is
``x = x_t / (1 - t) = x0 + sigma eps`` with ``sigma = t / (1 - t)``
(:class:`gaussport.schedules.RectifiedFlow`), so every solver and the Gaussian teleport work
unchanged on :class:`RectifiedFlowDenoiser` -- except at ``t = 1`` (pure noise), which is
``sigma = inf``. :func:`sample_rectified_flow` handles a start at ``t = 1``:

* with a warm start, the exact teleport from pure noise,
  ``x_ve(sigma) = mu + (Sigma + sigma^2 I)^(1/2) x_1`` (the Gaussian flow map in native
  coordinates started at ``alpha_1 = 0``, ``sigma_1 = 1``: docs/warm-start.md#teleporting-from-pure-noise;
  the native state is ``x_ve / (1 + sigma)``), 0 evaluations;
* without one, the exact first-order limit of the first step: ``x0_hat = D(x_1, t=1)`` and
  ``x_ve(sigma_1) = x0_hat + sigma_1 x_1`` (the noise estimate at ``t = 1`` is ``x_1`` itself; this
  is the flow-Euler step ``x_1 + (t_1 - 1) v``: :func:`step_from_noise`), 1 evaluation; the solver
  takes over at ``t_1``.

Every conversion between flow times and VE levels is :class:`gaussport.schedules.RectifiedFlow`'s
(``sigma_at``, ``t_at``, ``alpha_at``). ``ve_sigma`` and ``flow_time`` are deprecated names of
``RectifiedFlow().sigma_at`` and ``RectifiedFlow().t_at``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import _deprecation
from .._checks import Grid, as_grid, check_state, noise_level, state_dtype
from ..denoiser import DenoiserCall
from ..loop import finish
from ..sampling import Callback, Solution, StepInfo, resolve_solver, sample, solve, with_warm_start_statistics
from ..schedules import RectifiedFlow, canonical_prediction, to_denoised
from ..solvers import Solver
from ._teleport import check_sample_shape, from_noise, resolve_warm_start

__all__ = ["RectifiedFlowDenoiser", "sample_rectified_flow", "teleport_native", "step_from_noise"]

_SCHEDULE = RectifiedFlow()

__getattr__ = _deprecation.module_aliases(
    __name__,
    {
        "ve_sigma": ("gaussport.schedules.RectifiedFlow().sigma_at", lambda: _SCHEDULE.sigma_at),
        "flow_time": ("gaussport.schedules.RectifiedFlow().t_at", lambda: _SCHEDULE.t_at),
    },
)


def step_from_noise(denoised: Tensor, noise: Tensor, sigma_next: float) -> Tensor:
    """The exact first-order step from pure noise (``t = 1``) to VE level ``sigma_next``.

    At ``t = 1`` the state is the noise ``x_1`` itself and so is the noise estimate; with
    ``denoised = D(x_1, t = 1)`` the step lands on ``x_ve = denoised + sigma_next * x_1`` (the
    flow-Euler step ``x_1 + (t_next - 1) v`` in VE coordinates), and on ``denoised`` at ``sigma_next = 0``.
    """
    return denoised + sigma_next * noise if sigma_next > 0 else denoised


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)).to(like.dtype)


def _timestep_by_keyword(model: Callable[..., Any]) -> bool:
    """Whether ``model`` takes its time as the keyword ``timestep`` rather than as the second
    positional argument: diffusers' transformers (``SD3Transformer2DModel``,
    ``FluxTransformer2DModel``: ``forward(hidden_states, encoder_hidden_states, pooled_projections,
    timestep, ...)``), whose second positional parameter is the prompt embedding."""
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and C callables: the plain convention
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.name == "timestep" for p in params) and (
        len(positional) < 2 or positional[1].name != "timestep"
    )


def _prediction(out: Any) -> Any:
    """The prediction in a model's return value: ``.sample`` (diffusers outputs), a tuple's first entry."""
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    return out


class RectifiedFlowDenoiser:
    """A rectified-flow model as a VE denoiser.

    ``D(x, sigma) = x0_hat(x / (1 + sigma), t = sigma / (1 + sigma))`` where the model is called as
    ``model(x_t, t * time_scale, **model_kwargs)`` -- or ``model(x_t, timestep=t * time_scale,
    **model_kwargs)`` for a model whose second positional parameter is not ``timestep``, such as
    diffusers' ``SD3Transformer2DModel`` and ``FluxTransformer2DModel`` -- and its output (a tensor,
    ``.sample`` of a diffusers output, or a tuple's first entry) converted to ``x0``
    (``"flow"``: ``x0 = x_t - t v``; ``"x0"``: unchanged; ``"epsilon"``: ``(x_t - t eps) / (1 - t)``).

    Args:
        model: ``model(x_t, t, **kwargs)`` or a diffusers transformer (passed as it is:
            ``RectifiedFlowDenoiser(pipe.transformer, time_scale=1000.0, encoder_hidden_states=...,
            pooled_projections=...)``); ``t`` is a ``[B]`` tensor.
        prediction: ``"flow"`` (velocity ``eps - x0``, SD3/Flux), ``"x0"`` (ComfyUI's denoiser
            convention) or ``"epsilon"``.
        time_scale: factor on ``t`` before the call (diffusers' SD3 transformers take
            ``t * 1000``; Flux takes ``t``).
        **model_kwargs: conditioning bound to every call (prompt embeddings, ...).
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        *,
        prediction: str = "flow",
        time_scale: float = 1.0,
        **model_kwargs: Any,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, **kwargs); got {type(model).__name__}.")
        self.prediction = canonical_prediction(prediction)
        if self.prediction == "v":
            raise ValueError(
                "prediction 'v' (alpha eps - sigma x0) is a VP parameterisation; rectified-flow models "
                "predict 'flow' (velocity eps - x0), 'x0' or 'epsilon'."
            )
        self.model = model
        self.time_scale = float(time_scale)
        self.model_kwargs = model_kwargs
        self.timestep_keyword = _timestep_by_keyword(model)

    def native(self, x_t: Tensor, t: Tensor, **extra: Any) -> Tensor:
        """``E[x0 | x_t]`` from the model at native time ``t`` (shape ``[B]``)."""
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        t_model = t * self.time_scale if self.time_scale != 1.0 else t
        if self.timestep_keyword:
            out = self.model(x_t, timestep=t_model, **self.model_kwargs, **extra)
        else:
            out = self.model(x_t, t_model, **self.model_kwargs, **extra)
        out = _prediction(out)
        if not isinstance(out, Tensor) or out.shape != x_t.shape:
            raise ValueError(
                f"the flow model returned {tuple(getattr(out, 'shape', ()))} for an input of shape "
                f"{tuple(x_t.shape)}; "
                "it must return a tensor of the input's shape (a velocity, x0 or noise prediction)."
            )
        return to_denoised(_SCHEDULE, out, x_t, t.to(x_t.dtype), self.prediction)

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        alpha = _per_sample(_SCHEDULE.alpha_of_sigma(sigma), x)
        return self.native(x * alpha, _SCHEDULE.t_of_sigma(sigma), **extra)

    def __repr__(self) -> str:
        return f"RectifiedFlowDenoiser(prediction={self.prediction!r}, time_scale={self.time_scale})"


def teleport_native(warm_start: Any, x_t: Tensor, t_from: float, t_to: float) -> Tensor:
    """The exact Gaussian flow in native rectified-flow coordinates from ``t_from`` (may be 1) to ``t_to``."""
    s_from, s_to = _SCHEDULE.sigma_at(t_from), _SCHEDULE.sigma_at(t_to)
    if math.isinf(s_from):
        x_ve = from_noise(warm_start, x_t, s_to)
    else:
        x_ve = warm_start.flow(x_t / _SCHEDULE.alpha_at(s_from), s_from, s_to)
    return x_ve * _SCHEDULE.alpha_at(s_to)


def _native_callback(callback: Callback | None, offset: int) -> Callback | None:
    """A solver callback (VE) re-expressed in native flow coordinates, interval indexes shifted."""
    if callback is None:
        return None

    def native(info: StepInfo) -> None:
        callback(
            StepInfo(
                info.i + offset,
                _SCHEDULE.t_at(info.sigma),
                _SCHEDULE.t_at(info.sigma_next),
                info.x * _SCHEDULE.alpha_at(info.sigma),
                info.denoised,
                info.teleported,
            )
        )

    return native


def sample_rectified_flow(
    denoiser: RectifiedFlowDenoiser | Callable[..., Tensor],
    x: Tensor,
    ts: Tensor | Sequence[float],
    solver: Solver | str = "euler",
    *,
    warm_start: Any = None,
    t_skip: float | None = None,
    teleport: str = "truncate",
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype | None = None,
    model_dtype: torch.dtype | None = None,
    check_finite: bool = True,
    schedule: str | None = None,
    **options: Any,
) -> Solution:
    """Integrate a rectified-flow model from ``ts[0]`` to ``ts[-1]`` in native coordinates.

    Args:
        denoiser: a :class:`RectifiedFlowDenoiser` (needed for a start at ``t = 1`` without warm
            start); any VE denoiser otherwise.
        x: the native state ``x_t`` at ``ts[0]`` (pure noise when ``ts[0] = 1``).
        ts: strictly decreasing flow times in ``[0, 1]`` (e.g. FlowMatch schedulers' sigmas).
        solver: a registered name or a solver instance; it integrates in VE coordinates.
        warm_start: a Gaussian (or statistics path, or per-class Gaussians bound with ``select``),
            fitted to the data ``x0``, to teleport with.
        t_skip: the flow time to teleport to (``t_skip < ts[0]``).
        teleport: ``"truncate"``; ``"respace"`` only for starts below ``t = 1`` (as
            :func:`gaussport.sample`).
        callback: called once per interval of ``ts`` with a :class:`~gaussport.StepInfo` in native
            coordinates (``sigma`` = flow time, ``x`` = native state).
        disable: as in :func:`gaussport.solve`.
        dtype: as in :func:`gaussport.solve`.
        model_dtype: as in :func:`gaussport.solve`.
        check_finite: as in :func:`gaussport.solve`.
        schedule: deprecated name of ``teleport``.
        **options: as in :func:`gaussport.solve`.

    Returns:
        A :class:`~gaussport.Solution` with the native state at ``ts[-1]``; ``sigmas`` are the flow
        times the solver integrated, ``teleport`` the ``(t_from, t_to)`` pair.
    """
    mode = _deprecation.renamed_argument(
        "sample_rectified_flow", "schedule", "teleport", schedule, teleport, "truncate"
    )
    grid_t = as_grid(ts, name="ts")
    if grid_t[0] > 1.0:
        raise ValueError(f"rectified-flow times lie in [0, 1]; ts[0] = {grid_t[0]}.")
    check_state(x)
    solver_obj = resolve_solver(solver, options)
    warm = resolve_warm_start(warm_start)
    if (warm is None) != (t_skip is None):
        raise ValueError("warm_start and t_skip go together: pass both to teleport, or neither.")
    if warm is not None:
        t_skip = noise_level(t_skip, name="t_skip")
        check_sample_shape(warm, x.shape[1:])
        if not grid_t[-1] <= t_skip < grid_t[0]:
            raise ValueError(f"t_skip = {t_skip} must lie in [ts[-1], ts[0]) = [{grid_t[-1]}, {grid_t[0]}).")
    teleported = None if warm is None else (grid_t[0], float(t_skip))
    work = state_dtype(x.dtype, dtype)
    if len(grid_t) == 1:
        return Solution(x.clone(), 0, grid_t)
    sig = tuple(_SCHEDULE.sigma_at(t) for t in grid_t)
    common: dict[str, Any] = dict(
        disable=disable, dtype=work, model_dtype=model_dtype or x.dtype, check_finite=False
    )

    if grid_t[0] < 1.0:
        x_ve, offset, nfe = x.to(work) / _SCHEDULE.alpha_at(sig[0]), 0, 0
    else:
        if mode != "truncate":
            raise ValueError(
                "a start at t = 1 supports teleport='truncate' only; pass ts below t_skip yourself "
                "to choose the steps after the teleport."
            )
        z = x.to(work)
        t1, s1 = grid_t[1], sig[1]
        if warm is not None and float(t_skip) >= t1:
            # Teleport inside the first interval: the solver's first step ends at t1.
            s_skip = _SCHEDULE.sigma_at(t_skip)
            tail = ((s_skip,) if s_skip > s1 else ()) + sig[1:]
            sol = solve(
                denoiser,
                from_noise(warm, z, s_skip),
                tail,
                with_warm_start_statistics(solver_obj, warm, tail),
                callback=_native_callback(callback, 0),
                **common,
            )
            return _native_solution(sol, x.dtype, check_finite, teleported, 0)
        if warm is not None:
            x_ve, nfe = from_noise(warm, z, s1), 0
            if callback is not None:  # the posterior mean at infinite noise is the data mean
                callback(StepInfo(0, 1.0, t1, z, from_noise(warm, torch.zeros_like(z), 0.0), teleported=True))
        else:
            if not isinstance(denoiser, RectifiedFlowDenoiser):
                raise TypeError(
                    "a start at t = 1 without warm start needs a RectifiedFlowDenoiser (the model is "
                    "evaluated at t = 1, where the VE denoiser is undefined)."
                )
            call = DenoiserCall(denoiser.native, model_dtype=model_dtype or x.dtype, state_dtype=work)
            denoised = call(z, 1.0)  # DenoiserCall's sigma argument is the native time here: t = 1
            nfe = call.nfe
            x_ve = step_from_noise(denoised, z, s1)
            if callback is not None:
                callback(StepInfo(0, 1.0, t1, z, denoised))
        sig, offset = sig[1:], 1
        if len(sig) == 1:  # ts = (1, t1): nothing left for the solver
            return _native_solution(Solution(x_ve, 0, sig), x.dtype, check_finite, teleported, nfe)
    cb = _native_callback(callback, offset)
    if warm is None:
        sol = solve(denoiser, x_ve, sig, solver_obj, callback=cb, **common)
    else:
        sol = sample(
            denoiser,
            x_ve,
            sig,
            solver_obj,
            warm_start=warm,
            sigma_skip=_SCHEDULE.sigma_at(t_skip),
            teleport=mode,
            callback=cb,
            **common,
        )
    return _native_solution(sol, x.dtype, check_finite, teleported, nfe)


def _native_solution(
    sol: Solution,
    out_dtype: torch.dtype,
    check_finite: bool,
    teleport: tuple[float, float] | None,
    extra_nfe: int,
) -> Solution:
    """A VE solution mapped back to native flow coordinates: ``x_t = alpha x_ve = x_ve / (1 + sigma)``."""
    x = finish(sol.x * _SCHEDULE.alpha_at(sol.sigmas[-1]), out_dtype, check_finite)
    times: Grid = tuple(_SCHEDULE.t_at(s) for s in sol.sigmas)
    return Solution(x, sol.nfe + extra_nfe, times, sol.state, teleport)
