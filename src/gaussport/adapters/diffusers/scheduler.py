"""``GaussportScheduler``: a gaussport solver, with the analytic teleport, inside unmodified pipelines.

This module imports diffusers (``gaussport.adapters.diffusers`` imports it only on first access to
``GaussportScheduler``). How it behaves per pipeline type: docs/adapters.md#diffusers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from torch import Tensor

from ...loop import Teleport
from ...sampling import with_warm_start_statistics
from ...schedules import NoiseSchedule, RectifiedFlow, VPDiscrete, to_denoised
from ...solvers import SingleEvaluationSolver, Solver
from ...solvers import get as get_solver
from .._teleport import check_sample_shape, from_noise, load_statistics
from ..flow import step_from_noise
from ._common import is_flow_config, prediction_of
from ._plan import Plan, full_grid, plan_run
from .denoiser import model_prediction

__all__ = ["GaussportScheduler", "GaussportSchedulerOutput"]

logger = logging.getLogger("gaussport")


@dataclass
class GaussportSchedulerOutput(BaseOutput):
    """``prev_sample``: the state for the next model call; ``pred_original_sample``: ``x0`` estimate."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


@dataclass
class _Run:
    """What changes during a run; ``set_timesteps`` starts a new one.

    Attributes:
        begin_index: the first call (``set_begin_index``; img2img pipelines).
        step_index: the current call (``None`` before the first).
        scaled_index: the call whose ``scale_model_input`` has run.
        solver: the solver of this run (with the warm start's analytic EMS where they apply).
        teleport: the record of the teleport, once made (given to ``solver.init``).
        solver_state: the solver state, once ``solver_started``.
        solver_started: ``solver.init`` has run (a ``None`` state is valid).
    """

    begin_index: int | None = None
    step_index: int | None = None
    scaled_index: int | None = None
    solver: Solver | None = None
    teleport: Teleport | None = None
    solver_state: Any = None
    solver_started: bool = False


class GaussportScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running a gaussport solver, with the analytic teleport.

    Drop it into an unmodified pipeline (``pipe.scheduler = GaussportScheduler.from_config(
    pipe.scheduler.config, statistics_path=..., sigma_skip=...)``). Each pipeline step is one
    model call and one solver step; the scheduler holds the solver state (reset by
    ``set_timesteps``). Single-evaluation solvers only (euler and the multistep solvers).

    Config (all JSON; the statistics are read from ``statistics_path``, never serialised):
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the training
            noise schedule (as diffusers' DDPM-family schedulers).
        prediction_type: ``"epsilon"``, ``"v_prediction"``, ``"sample"`` or ``"flow_prediction"``
            (flow matching: ``x_t = (1 - t) x0 + t eps``, velocity prediction; then ``shift``,
            ``use_dynamic_shifting``, ``base_shift``, ``max_shift``, ``base_image_seq_len``,
            ``max_image_seq_len``, ``time_shift_type`` as in ``FlowMatchEulerDiscreteScheduler``).
        solver, solver_options: a registered gaussport solver and its options.
        sigma_schedule: ``"karras"`` (default for VP), ``"exponential"``, ``"linspace"``
            (uniform timesteps; default for flow matching, with the shift). ``rho``,
            ``sigma_min``, ``sigma_max`` (VE units) bound Karras/exponential grids.
        statistics_path: a gaussport statistics file (``Gaussian.save``) in the model's VE data
            coordinates (scaled latents for latent models).
        sigma_skip: the teleport level, in VE units (flow matching: ``t / (1 - t)``).
        teleport_at: ``"scale_model_input"`` (pipelines that call it before every model call,
            e.g. StableDiffusion(XL)Pipeline: the state is held in VE coordinates and the teleport
            costs no evaluation) or ``"step"`` (pipelines that do not: DDPM/DDIM/SD3/Flux; the
            state is held in the model's native coordinates and, with a teleport, the first model
            call is made on the raw noise and discarded: one extra evaluation). Default: the
            former for VP, the latter for flow matching.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        solver: str = "euler",
        solver_options: dict[str, Any] | None = None,
        sigma_schedule: str | None = None,
        rho: float = 7.0,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        statistics_path: str | None = None,
        sigma_skip: float | None = None,
        teleport_at: str | None = None,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        time_shift_type: str = "exponential",
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        if rescale_betas_zero_snr:
            raise ValueError(
                "zero-terminal-SNR schedules (rescale_betas_zero_snr=True) start at infinite noise in VE "
                "coordinates and are not supported by GaussportScheduler yet; use the pipeline's own "
                "scheduler for such models."
            )
        self._prediction = prediction_of(prediction_type)
        self._flow = self._prediction == "flow"
        self._schedule: NoiseSchedule
        if self._flow:
            self.alphas_cumprod = None
            self._schedule = RectifiedFlow()
        else:
            if trained_betas is not None:
                betas = torch.tensor(trained_betas, dtype=torch.float64)
                self._schedule = VPDiscrete(torch.cumprod(1 - betas, 0))
            else:
                self._schedule = VPDiscrete.from_betas(
                    beta_start, beta_end, num_train_timesteps, beta_schedule
                )
            self.alphas_cumprod = self._schedule.alphas_cumprod.to(torch.float32)
        mode = teleport_at or ("step" if self._flow else "scale_model_input")
        if mode not in ("scale_model_input", "step"):
            raise ValueError(f"teleport_at must be 'scale_model_input' or 'step'; got {teleport_at!r}.")
        if self._flow and mode == "scale_model_input":
            raise ValueError(
                "flow-matching pipelines (SD3, Flux) do not call scale_model_input and start at t = 1 "
                "(infinite VE noise); use teleport_at='step'."
            )
        # Which coordinates the pipeline's state is in: VE (scale_model_input) or the model's native ones.
        self._scaled = mode == "scale_model_input"
        self._solver = get_solver(solver, **(solver_options or {}))
        if not isinstance(self._solver, SingleEvaluationSolver):
            raise ValueError(
                "GaussportScheduler runs solvers that evaluate the model once per step (euler, the "
                f"multistep solvers); {solver!r} needs {type(self._solver).__name__}'s several evaluations "
                "per step, which a pipeline's one-call-per-timestep loop cannot provide. Use "
                f"gaussport.sample(DiffusersDenoiser(...), ..., solver={solver!r}) instead."
            )
        if sigma_schedule not in (None, "karras", "exponential", "linspace"):
            raise ValueError(
                f"sigma_schedule must be 'karras', 'exponential' or 'linspace'; got {sigma_schedule!r}."
            )
        self._warm: Any = None
        # Analytic EMS of the warm start by range, for statistics-based solvers (this scheduler's own).
        self._statistics: dict[tuple[float, float, int], Any] = {}
        self.timesteps = torch.empty(0)
        self.sigmas = torch.empty(0)
        self.num_inference_steps: int | None = None
        self._plan: Plan | None = None
        self._run = _Run()

    # ---------------------------------------------------------------- diffusers API
    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """As diffusers' ``from_config``; a FlowMatch config implies ``'flow_prediction'``."""
        if is_flow_config(dict(config or {})) and "prediction_type" not in kwargs:
            kwargs["prediction_type"] = "flow_prediction"
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @property
    def init_noise_sigma(self) -> float:
        """What pipelines multiply standard normal noise by: the VE start level, or 1 (native)."""
        if self._scaled and self._plan is not None:
            return self._plan.start
        return 1.0

    @property
    def step_index(self) -> int | None:
        return self._run.step_index

    @property
    def begin_index(self) -> int | None:
        return self._run.begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._run.begin_index = int(begin_index)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def warm_start(self) -> Any:
        """The warm-start Gaussian (from ``statistics_path``, or attached with :meth:`set_warm_start`)."""
        if self._warm is None and self.config.statistics_path is not None:
            self._warm = load_statistics(self.config.statistics_path)
        return self._warm

    def set_warm_start(self, gaussian: Any) -> None:
        """Attach warm-start statistics directly (not saved in the config; prefer ``statistics_path``)."""
        self._warm = gaussian
        self._statistics.clear()

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        timesteps: list[float] | None = None,
        mu: float | None = None,
    ) -> None:
        """Build the run: the grid, the teleport, one timestep per model call; reset all state.

        ``sigmas`` are VE levels for VP models (as Euler's), flow times (before the shift, as
        FlowMatch's) for flow matching; ``timesteps`` are model timesteps.
        """
        full = full_grid(self.config, self._schedule, num_inference_steps, sigmas, timesteps, mu)
        warm, skip = self.warm_start, self.config.sigma_skip
        if skip is not None and not float(skip) > 0:
            raise ValueError(f"sigma_skip must be a noise level > 0 (VE units); got {skip}.")
        if warm is None and skip is not None and self.config.statistics_path is None:
            logger.warning(
                "GaussportScheduler: sigma_skip is set but no statistics are attached; not teleporting."
            )
        teleport_to = float(skip) if skip is not None and warm is not None else None
        plan = plan_run(full, teleport_to, self._schedule, scaled=self._scaled)
        self._plan = plan
        self.num_inference_steps = len(plan.kinds)
        self.timesteps = torch.tensor(
            [self._model_time(v) for v in plan.levels], dtype=torch.float32, device=device
        )
        # The pipelines' `sigmas`: VE levels for VP, flow times for flow matching (as their own schedulers).
        levels = plan.levels + (plan.grid[-1],)
        native = [self._schedule.t_at(v) for v in levels] if self._flow else list(levels)
        self.sigmas = torch.tensor(native, dtype=torch.float32)
        solver = self._solver
        if warm is not None:
            solver = with_warm_start_statistics(solver, warm, plan.grid, cache=self._statistics)
        self._run = _Run(solver=solver)
        logger.debug(
            "GaussportScheduler: %d model calls, grid %s, teleport %s",
            len(plan.kinds),
            plan.grid,
            (full[0], plan.grid[0]) if plan.teleport else None,
        )

    # ---------------------------------------------------------------- per-call maths
    def _model_time(self, sigma: float) -> float:
        """The model's timestep for VE level ``sigma`` (VP: fractional training index; flow: t * T)."""
        t = self._schedule.t_at(sigma)
        return self.config.num_train_timesteps * t if self._flow else t

    def _to_ve(self, x: Tensor, sigma: float) -> Tensor:
        """The pipeline's state at level ``sigma`` in VE coordinates (pure noise stays as it is)."""
        if self._scaled or math.isinf(sigma):
            return x
        return x / self._schedule.alpha_at(sigma)

    def _from_ve(self, x_ve: Tensor, sigma: float) -> Tensor:
        """A VE state at level ``sigma`` in the coordinates the pipeline holds."""
        return x_ve if self._scaled else x_ve * self._schedule.alpha_at(sigma)

    def _index(self) -> int:
        if self._run.step_index is None:
            self._run.step_index = self._run.begin_index or 0
        return self._run.step_index

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before scale_model_input/step.")
        return self._plan

    def _teleport(self, x_ve: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The warm start's exact flow of ``x_ve`` from ``sigma_from`` (may be inf) to ``sigma_to``."""
        warm = self.warm_start
        check_sample_shape(warm, x_ve.shape[1:], what="the pipeline's latents")
        if math.isinf(sigma_from):  # flow matching at t = 1: x_ve is the pure noise itself
            return from_noise(warm, x_ve, sigma_to)
        return warm.flow(x_ve, sigma_from, sigma_to)

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The model input for the current call (teleporting the sample first at call 0)."""
        plan = self._require_plan()
        k = self._index()
        self._run.scaled_index = k
        if not self._scaled:
            return sample  # native coordinates: the model input is the state itself
        work = torch.promote_types(sample.dtype, torch.float32)
        x_ve = sample.to(work)
        if k == 0 and plan.teleport_first:
            x_ve = self._teleport(x_ve, plan.start, plan.grid[0])
        return (x_ve * self._schedule.alpha_at(plan.levels[k])).to(sample.dtype)

    def step(
        self,
        model_output: Tensor,
        timestep: Any,
        sample: Tensor,
        generator: torch.Generator | None = None,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        return_dict: bool = True,
    ) -> Any:
        """One model call's update: convert the output to ``x0``, advance the solver one step.

        ``generator`` is unused (the solvers are deterministic); ``eta`` must be 0 or ``None``
        (DDIMPipeline passes it); ``use_clipped_model_output`` is ignored.
        """
        if eta:
            raise ValueError(
                f"GaussportScheduler integrates the probability-flow ODE (eta = 0); got eta={eta}."
            )
        plan = self._require_plan()
        k = self._index()
        if k >= len(plan.kinds):
            raise IndexError(
                f"step called {k + 1} times for {len(plan.kinds)} timesteps; call set_timesteps again."
            )
        if self._scaled and self._run.scaled_index != k:
            raise RuntimeError(
                "GaussportScheduler(teleport_at='scale_model_input') needs the pipeline to call "
                "scheduler.scale_model_input before every model call, and this one does not "
                "(DDPM/DDIM/SD3/Flux pipelines). Use GaussportScheduler.from_config(config, "
                "teleport_at='step', ...); with a teleport it costs one extra model evaluation."
            )
        kind, j = plan.kinds[k]
        work = torch.promote_types(sample.dtype, torch.float32)
        x = sample.to(work)
        out = model_prediction(model_output, x).to(work)
        if kind == "teleport":
            prev, denoised = self._teleport_step(x, plan, plan.levels[k])
        elif kind == "noise":  # flow matching at t = 1 without teleport: x0 = z - v
            t = torch.ones(x.shape[0], dtype=work, device=x.device)
            denoised = to_denoised(self._schedule, out, x, t, self._prediction)
            prev = self._from_ve(step_from_noise(denoised, x, plan.grid[0]), plan.grid[0])
        else:
            prev, denoised = self._solver_step(x, out, plan, j, first_call=k == 0)
        self._run.step_index = k + 1
        prev = prev.to(sample.dtype)
        if not return_dict:
            return (prev, denoised.to(sample.dtype))
        return GaussportSchedulerOutput(prev_sample=prev, pred_original_sample=denoised.to(sample.dtype))

    def _teleport_step(self, x: Tensor, plan: Plan, level: float) -> tuple[Tensor, Tensor]:
        """The discarded call on the raw noise at ``level``: teleport to ``grid[0]``, D of the warm start."""
        x_ve = self._to_ve(x, level)
        x_next = self._teleport(x_ve, level, plan.grid[0])
        if not math.isinf(level):  # the record flows from x_from: a finite start only (as before)
            self._run.teleport = Teleport(self.warm_start, level, x_ve, plan.grid[0])
        sigma = torch.full((x.shape[0],), plan.grid[0], dtype=x.dtype, device=x.device)
        return self._from_ve(x_next, plan.grid[0]), self.warm_start(x_next, sigma)

    def _solver_step(
        self, x: Tensor, out: Tensor, plan: Plan, j: int, *, first_call: bool
    ) -> tuple[Tensor, Tensor]:
        """Solver interval ``j``: the model output as ``D(x, grid[j])``, then ``solver.update``."""
        grid, run = plan.grid, self._run
        x_ve = self._to_ve(x, grid[j])
        if first_call and plan.teleport_first:  # as scale_model_input did to the model's input
            run.teleport = Teleport(self.warm_start, plan.start, x_ve, grid[j])
            x_ve = self._teleport(x_ve, plan.start, grid[j])
        x_t = x_ve * self._schedule.alpha_at(grid[j]) if self._scaled else x
        t = torch.full((x.shape[0],), plan.grid_times[j], dtype=torch.float64, device=x.device)
        denoised = to_denoised(self._schedule, out, x_t, t, self._prediction).to(x.dtype)
        solver = run.solver if run.solver is not None else self._solver
        if not run.solver_started:
            run.solver_state = solver.init(x_ve, grid, run.teleport)
            run.solver_started = True
        x_next, run.solver_state = solver.update(x_ve, denoised, grid, j, run.solver_state)
        return self._from_ve(x_next, grid[j + 1]), denoised

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``x0`` noised to ``timesteps`` in the coordinates this scheduler holds (img2img, training)."""
        t = torch.as_tensor(timesteps, device=original_samples.device).to(torch.float64).flatten()
        if self._flow:
            t = t / self.config.num_train_timesteps
        if t.numel() == 1:
            t = t.expand(original_samples.shape[0])
        alpha, sigma = self._schedule.alpha_sigma(t)
        view = (-1,) + (1,) * (original_samples.ndim - 1)
        alpha = alpha.reshape(view).to(original_samples.dtype)
        sigma = sigma.reshape(view).to(original_samples.dtype)
        if self._scaled:
            return original_samples + noise * (sigma / alpha)
        return original_samples * alpha + noise * sigma
