"""The run of a ``GaussportScheduler``: its VE grid, what each model call is for, and which call a
timestep names.

Pure functions of the scheduler config (no diffusers import): :func:`full_grid` builds the VE levels
of a run without teleport, :func:`plan_run` places the teleport and lists the model calls,
:func:`timestep_index` finds a call from its timestep as diffusers' schedulers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ... import grids
from ..._checks import Grid, as_grid
from ...schedules import NoiseSchedule, RectifiedFlow

__all__ = ["Plan", "full_grid", "plan_run", "timestep_index"]


@dataclass(frozen=True)
class Plan:
    """What each model call of a run is for (one entry per element of the scheduler's ``timesteps``).

    Kinds: ``"teleport"`` -- discard the output, teleport ``start -> grid[0]`` (the teleport paid by
    one evaluation, whatever the pipeline calls); ``"noise"`` -- the first-order step from pure noise
    (flow matching at ``t = 1`` without warm start); ``"solve"`` -- solver interval ``j``.

    Attributes:
        kinds: ``(kind, j)`` per model call (``j = -1`` unless the kind is ``"solve"``).
        levels: the VE level of the sample the pipeline holds at each call.
        grid: the finite grid the solver integrates.
        start: the level of the pipeline's initial sample.
        teleport: whether the run teleports from ``start`` to ``grid[0]``.
        teleport_first: teleport at call 0 without a wasted evaluation, inside ``scale_model_input``
            (call 0 is then ``("solve", 0)`` at ``grid[0]`` while the pipeline's sample is at ``start``).
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


def plan_run(full: Grid, skip: float | None, schedule: NoiseSchedule, *, teleport_first: bool) -> Plan:
    """The model calls of a run over ``full``, teleporting to ``skip`` (``None``: no teleport).

    ``teleport_first``: the teleport happens inside the first ``scale_model_input`` (no extra call);
    otherwise the first call is made on the undisturbed initial sample and its output is discarded.
    """
    kinds: list[tuple[str, int]] = []
    levels: list[float] = []
    teleport = skip is not None and skip < full[0]
    if teleport:
        below = tuple(v for v in full if v < skip and not math.isclose(v, skip, rel_tol=1e-9))
        above = [v for v in full if math.isclose(v, skip, rel_tol=1e-9)]
        grid = ((above[0] if above else skip),) + below
        if not teleport_first:  # the first call sees the initial sample: its output is discarded
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
    return Plan(tuple(kinds), tuple(levels), grid, full[0], teleport, teleport and teleport_first, times)


def timestep_index(timesteps: torch.Tensor, timestep: Any) -> int:
    """The call that ``timestep`` names in ``timesteps``, as diffusers' ``index_for_timestep``.

    An exact match first, else the nearest timestep within half a unit (pipelines that round or cast
    their timesteps); of several matches the second, as diffusers' schedulers (a run that starts
    mid-schedule at a repeated timestep must not skip the level).

    Raises:
        ValueError: if no timestep of the run is within half a unit of ``timestep``.
    """
    table = timesteps.detach().to("cpu", torch.float64).flatten()
    t = torch.as_tensor(timestep).detach().to("cpu", torch.float64).flatten()
    if t.numel() == 0 or table.numel() == 0:
        raise ValueError("timestep_index needs a timestep and a non-empty schedule (call set_timesteps).")
    distance = (table - t[0]).abs()
    indices = (distance == 0).nonzero().flatten()
    if indices.numel() == 0:
        nearest = float(distance.min())
        if nearest > 0.5:
            raise ValueError(
                f"timestep {float(t[0])} is not one of this run's timesteps {table.tolist()}; pass one of "
                "scheduler.timesteps (or call scheduler.set_begin_index(i) before the first step)."
            )
        indices = (distance == nearest).nonzero().flatten()
    return int(indices[1 if indices.numel() > 1 else 0])


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

    ``cfg`` is the scheduler config; ``sigmas`` are VE levels for VP models, the last one included
    (as ``EulerDiscreteScheduler``'s: a run ends where the list ends), and flow times (before the
    shift, followed by 0 as ``FlowMatchEulerDiscreteScheduler``'s) for flow matching; ``timesteps``
    are model timesteps (followed by level 0).
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
    if sigmas is not None:  # VE levels, the last one included (as Euler's custom sigmas)
        return as_grid([float(s) for s in sigmas], name="sigmas")
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
