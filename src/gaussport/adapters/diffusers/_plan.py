"""The run of a ``GaussportScheduler``: its VE grid and what each model call is for.

Pure functions of the scheduler config (no diffusers import): :func:`full_grid` builds the VE levels
of a run without teleport, :func:`plan_run` places the teleport and lists the model calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ... import grids
from ..._checks import Grid, as_grid
from ...schedules import NoiseSchedule, RectifiedFlow

__all__ = ["Plan", "full_grid", "plan_run"]


@dataclass(frozen=True)
class Plan:
    """What each model call of a run is for (one entry per element of the scheduler's ``timesteps``).

    Kinds: ``"teleport"`` -- discard the output, teleport ``start -> grid[0]`` (pipelines that do not
    call ``scale_model_input``: one wasted evaluation); ``"noise"`` -- the first-order step from pure
    noise (flow matching at ``t = 1`` without warm start); ``"solve"`` -- solver interval ``j``.

    Attributes:
        kinds: ``(kind, j)`` per model call (``j = -1`` unless the kind is ``"solve"``).
        levels: the VE level of the sample the pipeline holds at each call.
        grid: the finite grid the solver integrates.
        start: the level of the pipeline's initial sample.
        teleport: whether the run teleports from ``start`` to ``grid[0]``.
        teleport_first: teleport at call 0 without a wasted evaluation (``scale_model_input``
            pipelines).
        grid_times: the native time of each level of ``grid`` (VP: fractional training index;
            flow: ``t``).
    """

    kinds: tuple[tuple[str, int], ...]
    levels: tuple[float, ...]
    grid: Grid
    start: float
    teleport: bool
    teleport_first: bool
    grid_times: tuple[float, ...]


def plan_run(full: Grid, skip: float | None, schedule: NoiseSchedule, *, scaled: bool) -> Plan:
    """The model calls of a run over ``full``, teleporting to ``skip`` (``None``: no teleport).

    ``scaled``: the pipeline calls ``scale_model_input`` before every model call, so the teleport
    happens there at call 0; otherwise the first call sees the raw noise and its output is discarded.
    """
    kinds: list[tuple[str, int]] = []
    levels: list[float] = []
    teleport = skip is not None and skip < full[0]
    if teleport:
        below = tuple(v for v in full if v < skip and not math.isclose(v, skip, rel_tol=1e-9))
        above = [v for v in full if math.isclose(v, skip, rel_tol=1e-9)]
        grid = ((above[0] if above else skip),) + below
        if not scaled:  # the first call sees the raw noise: its output is discarded
            kinds.append(("teleport", -1))
            levels.append(full[0])
    else:
        grid = full
        if math.isinf(full[0]):  # flow matching from pure noise: exact first-order step
            kinds.append(("noise", -1))
            levels.append(full[0])
            grid = full[1:]
    for j in range(len(grid) - 1):
        kinds.append(("solve", j))
        levels.append(grid[j])
    times = tuple(schedule.t_at(v) for v in grid)
    return Plan(tuple(kinds), tuple(levels), grid, full[0], teleport, teleport and scaled, times)


def _flow_shift(t: float, shift: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def _time_shift(mu: float, t: float, kind: str) -> float:
    if t <= 0.0:
        return 0.0
    if kind == "linear":
        return mu / (mu + (1 / t - 1))
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def _flow_times(cfg: Any, n: int | None, sigmas: Any, mu: float | None) -> list[float]:
    """FlowMatchEulerDiscreteScheduler's flow times (shifted), before the final 0."""
    steps = cfg.num_train_timesteps
    if sigmas is None:
        if n is None:
            raise ValueError("pass num_inference_steps or sigmas.")
        top, bottom = 1.0, 1.0 / steps
        if not cfg.use_dynamic_shifting:  # FlowMatchEulerDiscreteScheduler's range (shifted once)
            top, bottom = _flow_shift(top, cfg.shift), _flow_shift(bottom, cfg.shift)
        base = [top + (bottom - top) * i / (n - 1) for i in range(n)] if n > 1 else [top]
    else:
        base = [float(s) for s in sigmas]
    if cfg.use_dynamic_shifting:
        if mu is None:
            raise ValueError("use_dynamic_shifting needs mu (the pipeline passes it to set_timesteps).")
        return [_time_shift(mu, t, cfg.time_shift_type) for t in base]
    return [_flow_shift(t, cfg.shift) for t in base]


def full_grid(
    cfg: Any, schedule: NoiseSchedule, n: int | None, sigmas: Any, timesteps: Any, mu: float | None
) -> Grid:
    """The VE levels of a run without teleport, ending in 0 (flow matching may start at inf).

    ``cfg`` is the scheduler config; ``sigmas`` are VE levels for VP models and flow times (before
    the shift) for flow matching; ``timesteps`` are model timesteps.
    """
    flow = isinstance(schedule, RectifiedFlow)
    if flow:
        if timesteps is not None and sigmas is None:
            ts = [float(t) / cfg.num_train_timesteps for t in timesteps]
        elif (cfg.sigma_schedule or "linspace") == "linspace" or sigmas is not None:
            ts = _flow_times(cfg, n, sigmas, mu)
        else:
            ts = None
        if ts is not None:
            if ts[-1] > 0:
                ts.append(0.0)
            if not all(0.0 <= t <= 1.0 for t in ts) or any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
                raise ValueError(f"flow-matching times must decrease strictly within [0, 1]; got {ts}.")
            return tuple(schedule.sigma_at(t) for t in ts)
    if sigmas is not None:
        values = [float(s) for s in sigmas]
        return as_grid(values + ([0.0] if values[-1] > 0 else []), name="sigmas")
    if timesteps is not None:
        t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
        values = schedule.sigma_of_t(t).tolist()
        return as_grid(values + ([0.0] if values[-1] > 0 else []), name="sigmas from timesteps")
    if n is None:
        raise ValueError("pass num_inference_steps, sigmas or timesteps.")
    kind = cfg.sigma_schedule or ("linspace" if flow else "karras")
    if cfg.sigma_min is not None:
        lo = cfg.sigma_min
    else:  # flow matching: the level of the first training timestep, t = 1 / num_train_timesteps
        lo = schedule.sigma_at(1 / cfg.num_train_timesteps) if flow else schedule.sigma_min
    hi = cfg.sigma_max if cfg.sigma_max is not None else schedule.sigma_max
    if not math.isfinite(hi):
        raise ValueError(
            f"sigma_schedule={kind!r} for flow matching needs a finite sigma_max (VE units) in the "
            "config; or use sigma_schedule='linspace'."
        )
    if kind == "karras":
        return grids.karras(n, lo, hi, cfg.rho)
    if kind == "exponential":
        return grids.exponential(n, lo, hi)
    last = cfg.num_train_timesteps - 1
    idx = torch.linspace(last, 0, n, dtype=torch.float64) if n > 1 else torch.tensor([float(last)])
    return as_grid(schedule.sigma_of_t(idx).tolist() + [0.0], name="sigmas")
