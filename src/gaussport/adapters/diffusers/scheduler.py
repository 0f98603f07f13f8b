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

from ..._checks import Grid
from ...loop import Teleport
from ...sampling import with_warm_start_statistics
from ...schedules import NoiseSchedule, RectifiedFlow, VPDiscrete, to_denoised
from ...solvers import SingleEvaluationSolver, Solver
from ...solvers import get as get_solver
from .._teleport import check_sample_shape, from_noise, load_statistics
from ..flow import step_from_noise
from ._common import is_flow_config, prediction_of
from ._plan import Plan, full_grid, plan_run, timestep_index
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
        offset: the first level of the plan's grid the solver integrates from (1 when the teleport
            planned inside ``scale_model_input`` went on to ``grid[1]`` because the pipeline never
            called it).
    """

    begin_index: int | None = None
    step_index: int | None = None
    scaled_index: int | None = None
    solver: Solver | None = None
    teleport: Teleport | None = None
    solver_state: Any = None
    solver_started: bool = False
    offset: int = 0


def _check_tuning(
    sigma_skip: Any, probes_path: Any, recipe_path: Any, recipe_nfe: Any, solver_options: Any
) -> None:
    """The combinations of the automatic level and recipes :func:`gaussport.sample` refuses."""
    if isinstance(sigma_skip, str) and sigma_skip != "auto":
        raise ValueError(f"sigma_skip must be a noise level or 'auto'; got {sigma_skip!r}.")
    if probes_path is not None and sigma_skip != "auto":
        raise ValueError("probes_path is used with sigma_skip='auto'; drop it or set sigma_skip='auto'.")
    if recipe_path is not None and (sigma_skip is not None or solver_options):
        raise ValueError(
            "recipe_path was given with sigma_skip or solver_options; the recipe's entry sets the teleport "
            "level and the solver options: drop them (or drop the recipe)."
        )
    if recipe_nfe is not None and (
        isinstance(recipe_nfe, bool) or not isinstance(recipe_nfe, int) or recipe_nfe < 1
    ):
        raise ValueError(f"recipe_nfe must be a positive integer; got {recipe_nfe!r}.")


class GaussportScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running a gaussport solver, with the analytic teleport.

    Drop it into an unmodified pipeline (``pipe.scheduler = GaussportScheduler.from_config(
    pipe.scheduler.config, statistics_path=..., sigma_skip=...)``); it works in every pipeline
    with no option. Each pipeline step is one model call and one solver step; the scheduler holds
    the solver state (reset by ``set_timesteps``). Single-evaluation solvers only (euler and the
    multistep solvers).

    The pipeline's sample is held in the model's native coordinates (VP: ``x_t = alpha x0 +
    sigma_t eps``; flow: ``x_t``), as DPM-Solver's and UniPC's: the model input is the sample,
    ``scale_model_input`` changes nothing but the first call of a teleport, and pipelines that never
    call it (DDPM, DDIM, Kandinsky, SD3, Flux) get the same integration as those that do (SD, SDXL).
    ``init_noise_sigma`` is the noise scale of the first level, ``sigma_t`` of the run's start
    (``sigma / sqrt(1 + sigma^2)``, 1 for flow matching), from construction on. The step is located
    from its ``timestep`` when no begin index is set, as diffusers' schedulers do.

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
        sigma_skip: the teleport level, in VE units (flow matching: ``t / (1 - t)``), or ``"auto"``:
            the level :func:`gaussport.tuning.auto_sigma_skip` chooses for the solver and the run's
            grid (``teleport="truncate"``: the grid's levels below it, as this scheduler runs), from
            the probe record ``probes_path`` (or :meth:`set_probes`). The scheduler never calls the
            model, so the record must be built beforehand: ``gaussport.tuning.probe(DiffusersDenoiser(
            unet, scheduler), gaussian).save(path)``.
        probes_path: with ``sigma_skip="auto"``: a probe record file (``ProbeRecord.save``).
        recipe_path: a tuned recipe (``Recipe.save``; or attach one with :meth:`set_recipe`): its
            entry for ``solver`` at ``recipe_nfe`` (default: the evaluations the run's own grid
            costs, i.e. ``num_inference_steps``) sets the teleport level, the grid and the solver
            options, as ``gaussport.sample(..., recipe=...)``; the run's first level must be the
            recipe's ``sigma_max`` (set ``sigma_max`` in the config). Without ``sigma_skip`` and
            ``solver_options``.
        recipe_nfe: with a recipe, the entry's budget.
        teleport_at: where the teleport is paid; ``None`` (default) is ``"scale_model_input"``
            for VP models and ``"step"`` for flow matching. ``"scale_model_input"``: the first
            timestep is already ``sigma_skip``'s and the teleport is made inside the first
            ``scale_model_input`` (no extra evaluation); in a pipeline that never calls it, the
            first model call (made on the undisturbed sample) is discarded and the teleport goes on
            to the next level. ``"step"``: the first timestep is the starting level, its model call
            is discarded and ``step`` teleports to ``sigma_skip`` (one extra evaluation in every
            pipeline). Either works in every pipeline.
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
        sigma_skip: float | str | None = None,
        teleport_at: str | None = None,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        time_shift_type: str = "exponential",
        rescale_betas_zero_snr: bool = False,
        probes_path: str | None = None,
        recipe_path: str | None = None,
        recipe_nfe: int | None = None,
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
            raise ValueError(
                f"teleport_at must be 'scale_model_input', 'step' or None (the default); got {teleport_at!r}."
            )
        if self._flow and mode == "scale_model_input":
            raise ValueError(
                "flow-matching pipelines (SD3, Flux) never call scale_model_input, so a teleport planned "
                "there would always cost a discarded call and land a level lower; use teleport_at='step' "
                "(the default for flow matching)."
            )
        self._teleport_first = mode == "scale_model_input"
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
        _check_tuning(sigma_skip, probes_path, recipe_path, recipe_nfe, solver_options)
        self._warm: Any = None
        self._probes: Any = None  # a ProbeRecord attached with set_probes
        self._recipe: Any = None  # a Recipe attached with set_recipe (or read from recipe_path)
        self._run_solver: Solver = self._solver  # the solver of the planned run (a recipe's entry's)
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
        """What pipelines multiply standard normal noise by: the noise scale ``sigma_t`` of the start.

        The pipeline's sample is native, so this is ``sigma / sqrt(1 + sigma^2)`` at the run's first
        level (VP; Euler's VE ``init_noise_sigma`` is ``sigma`` itself) and 1 from pure noise (flow
        matching). Before ``set_timesteps`` it is that of the default run: pipelines that scale their
        latents first (BlipDiffusion, Kandinsky) get the same value.
        """
        start = self._plan.start if self._plan is not None else self._default_start
        return 1.0 if math.isinf(start) else start * self._schedule.alpha_at(start)

    @property
    def step_index(self) -> int | None:
        """The index of the current call (``None`` before the first ``scale_model_input``/``step``)."""
        return self._run.step_index

    @property
    def begin_index(self) -> int | None:
        """The first call, when the pipeline set it (``set_begin_index``); else ``None``."""
        return self._run.begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the run at call ``begin_index`` (img2img pipelines, after ``set_timesteps``)."""
        self._run.begin_index = int(begin_index)

    def index_for_timestep(self, timestep: Any, schedule_timesteps: Tensor | None = None) -> int:
        """The call that ``timestep`` names, as diffusers' schedulers: an exact match, the second of
        repeated ones (the nearest within half a unit for rounded timesteps)."""
        return timestep_index(self.timesteps if schedule_timesteps is None else schedule_timesteps, timestep)

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

    def set_probes(self, record: Any) -> None:
        """Attach the probe record of ``sigma_skip="auto"`` directly (not saved; prefer ``probes_path``)."""
        from ...tuning.probes import ProbeRecord

        if not isinstance(record, ProbeRecord):
            raise TypeError(
                f"set_probes takes a gaussport.tuning.ProbeRecord (gaussport.tuning.probe(...)); got "
                f"{type(record).__name__}. For a file, pass probes_path= in the config."
            )
        if self.config.sigma_skip != "auto":
            raise ValueError("probes are used with sigma_skip='auto'; set it in the config (from_config).")
        self._probes = record

    def set_recipe(self, recipe: Any) -> None:
        """Attach a tuned :class:`~gaussport.tuning.Recipe` (or read one from a path) directly (not
        saved in the config; prefer ``recipe_path``). The entry is chosen by ``set_timesteps``."""
        from ...tuning.recipe import load_recipe

        if self.config.sigma_skip is not None or self.config.solver_options:
            raise ValueError(
                "a recipe sets the teleport level and the solver options; build the scheduler without "
                "sigma_skip and solver_options to use one."
            )
        self._recipe = load_recipe(recipe)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        timesteps: list[float] | None = None,
        mu: float | None = None,
    ) -> None:
        """Build the run: the grid, the teleport, one timestep per model call; reset all state.

        ``sigmas`` are VE levels for VP models, the last one included (as Euler's: the run ends
        there), flow times before the shift for flow matching (as FlowMatch's: then 0);
        ``timesteps`` are model timesteps (then level 0).
        """
        full = full_grid(self.config, self._schedule, num_inference_steps, sigmas, timesteps, mu)
        warm, skip = self.warm_start, self.config.sigma_skip
        self._run_solver = self._solver
        recipe = self._active_recipe()
        if recipe is not None:
            full, teleport_to = self._recipe_run(full, recipe)
        elif self.config.recipe_nfe is not None:
            raise ValueError("recipe_nfe selects a recipe entry; pass recipe_path= too, or drop recipe_nfe.")
        elif skip == "auto":
            teleport_to = self._auto_level(full)
        else:
            if skip is not None and not float(skip) > 0:
                raise ValueError(f"sigma_skip must be a noise level > 0 (VE units); got {skip}.")
            if warm is None and skip is not None and self.config.statistics_path is None:
                logger.warning(
                    "GaussportScheduler: sigma_skip is set but no statistics are attached; not teleporting."
                )
            teleport_to = float(skip) if skip is not None and warm is not None else None
        plan = plan_run(full, teleport_to, self._schedule, teleport_first=self._teleport_first)
        self._plan = plan
        self.num_inference_steps = len(plan.kinds)
        self.timesteps = torch.tensor(
            [self._model_time(v) for v in plan.levels], dtype=torch.float32, device=device
        )
        # The pipelines' `sigmas`: VE levels for VP, flow times for flow matching (as their own schedulers).
        levels = plan.levels + (plan.grid[-1],)
        native = [self._schedule.t_at(v) for v in levels] if self._flow else list(levels)
        self.sigmas = torch.tensor(native, dtype=torch.float32)
        self._run = _Run()
        logger.debug(
            "GaussportScheduler: %d model calls, grid %s, teleport %s",
            len(plan.kinds),
            plan.grid,
            (full[0], plan.grid[0]) if plan.teleport else None,
        )

    # ---------------------------------------------------------------- automatic level and recipes
    def _active_recipe(self) -> Any:
        """The attached recipe, or the one ``recipe_path`` names (read once)."""
        if self._recipe is None and self.config.recipe_path is not None:
            from ...tuning.recipe import load_recipe

            self._recipe = load_recipe(self.config.recipe_path)
        return self._recipe

    def _tuned_warm_start(self, what: str) -> Any:
        warm = self.warm_start
        if warm is None:
            raise ValueError(
                f"{what} needs the warm-start statistics; pass statistics_path= in the config (or call "
                "set_warm_start(gaussian))."
            )
        return warm

    def _auto_level(self, full: Grid) -> float:
        """``sigma_skip="auto"``: the level :func:`gaussport.sample` chooses for this solver and grid
        (``teleport="truncate"``, as :func:`plan_run` teleports), from the attached probe record."""
        from ...tuning.auto import auto_sigma_skip

        warm = self._tuned_warm_start("sigma_skip='auto'")
        if math.isinf(full[0]):
            raise ValueError(
                "sigma_skip='auto' needs a run that starts at a finite level; flow-matching runs from pure "
                "noise start at t = 1: set sigma_schedule='karras' with a finite sigma_max, or pass a "
                "numeric sigma_skip."
            )
        probes = self._probes if self._probes is not None else self.config.probes_path
        if probes is None:
            raise ValueError(
                "sigma_skip='auto' in a scheduler needs a probe record (the scheduler never calls the "
                "model): build it once with gaussport.tuning.probe(DiffusersDenoiser(unet, scheduler), "
                "gaussian).save(path) and pass probes_path=path (or call set_probes(record))."
            )
        return auto_sigma_skip(None, warm, full, self._solver, teleport="truncate", probes=probes)

    def _recipe_run(self, full: Grid, recipe: Any) -> tuple[Grid, float | None]:
        """The recipe's entry for this solver and budget as the levels :func:`plan_run` takes: the run's
        start, then the entry's grid; its solver (with the entry's options) runs them."""
        self._tuned_warm_start("a recipe")
        solver = self.config.solver
        nfe = self.config.recipe_nfe
        if nfe is None:
            nfe = self._solver.evaluations(full[1:] if math.isinf(full[0]) else full)
        sigma_max = float(recipe.sigma_max)
        if not abs(full[0] - sigma_max) <= 1e-6 * sigma_max:
            raise ValueError(
                f"the run starts at sigma={full[0]}, but the recipe was tuned from sigma_max={sigma_max}; "
                f"set sigma_max={sigma_max} in the scheduler's config (from_config(..., sigma_max="
                f"{sigma_max}), with sigma_schedule='karras' or 'exponential')."
            )
        entry = recipe.entry(solver, int(nfe))
        run_solver = get_solver(entry.solver, **dict(entry.options))
        if not isinstance(run_solver, SingleEvaluationSolver):
            raise ValueError(
                f"the recipe's entry runs {type(run_solver).__name__}, which evaluates the model several "
                "times per step; a pipeline's one-call-per-timestep loop cannot run it."
            )
        self._run_solver = run_solver
        below = tuple(float(v) for v in entry.sigmas)
        if entry.sigma_skip >= full[0]:  # the entry does not teleport
            return below, None
        return (full[0],) + below, float(entry.sigma_skip)

    # ---------------------------------------------------------------- per-call maths
    @property
    def _default_start(self) -> float:
        """The first level of a run with the config's own grid (what ``init_noise_sigma`` stands for)."""
        return full_grid(self.config, self._schedule, 2, None, None, 0.0)[0]

    def _model_time(self, sigma: float) -> float:
        """The model's timestep for VE level ``sigma`` (VP: fractional training index; flow: t * T)."""
        t = self._schedule.t_at(sigma)
        return self.config.num_train_timesteps * t if self._flow else t

    def _to_ve(self, x: Tensor, sigma: float) -> Tensor:
        """The pipeline's native sample at level ``sigma`` in VE coordinates (pure noise stays as it is)."""
        return x if math.isinf(sigma) else x / self._schedule.alpha_at(sigma)

    def _from_ve(self, x_ve: Tensor, sigma: float) -> Tensor:
        """A VE state at level ``sigma`` in the pipeline's (native) coordinates."""
        return x_ve * self._schedule.alpha_at(sigma)

    def _index(self, timestep: Any) -> int:
        """The current call; at the first, the begin index or the call ``timestep`` names."""
        run = self._run
        if run.step_index is None:
            if run.begin_index is not None:
                run.step_index = run.begin_index
            elif timestep is None:
                run.step_index = 0
            else:
                run.step_index = self.index_for_timestep(timestep)
        return run.step_index

    def _require_plan(self) -> Plan:
        if self._plan is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before scale_model_input/step.")
        return self._plan

    def _call(self, timestep: Any) -> tuple[Plan, int]:
        plan = self._require_plan()
        k = self._index(timestep)
        if k >= len(plan.kinds):
            raise IndexError(
                f"call {k + 1} of a run of {len(plan.kinds)} timesteps; call set_timesteps again."
            )
        return plan, k

    def _teleport(self, x_ve: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The warm start's exact flow of ``x_ve`` from ``sigma_from`` (may be inf) to ``sigma_to``."""
        warm = self.warm_start
        check_sample_shape(warm, x_ve.shape[1:], what="the pipeline's latents")
        if math.isinf(sigma_from):  # pure noise: x_ve is the noise itself
            return from_noise(warm, x_ve, sigma_to)
        return warm.flow(x_ve, sigma_from, sigma_to)

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The model input for the current call: the sample itself, teleported at a planned call 0.

        Before ``set_timesteps`` (diffusers' scheduler tests call it so) the sample is returned as it is.
        """
        if self._plan is None:
            return sample
        plan, k = self._call(timestep)
        self._run.scaled_index = k
        if not (k == 0 and plan.teleport_first):
            return sample  # native coordinates: the model input is the sample
        work = torch.promote_types(sample.dtype, torch.float32)
        x_ve = self._teleport(self._to_ve(sample.to(work), plan.start), plan.start, plan.grid[0])
        return self._from_ve(x_ve, plan.grid[0]).to(sample.dtype)

    def scale_noise(self, sample: Tensor, timestep: Any, noise: Tensor | None = None) -> Tensor:
        """FlowMatch's name for :meth:`add_noise` (SD3/Flux img2img and inpainting pipelines)."""
        if noise is None:
            raise ValueError("scale_noise needs the noise to add (noise=).")
        return self.add_noise(sample, noise, torch.as_tensor(timestep))

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
        plan, k = self._call(timestep)
        kind, j = plan.kinds[k]
        work = torch.promote_types(sample.dtype, torch.float32)
        x = sample.to(work)
        out = model_prediction(model_output, x).to(work)
        if kind == "teleport":
            prev, denoised = self._teleport_step(x, plan.levels[k], plan, 0)
        elif kind == "noise":  # flow matching at t = 1 without teleport: x0 = z - v
            t = torch.ones(x.shape[0], dtype=work, device=x.device)
            denoised = to_denoised(self._schedule, out, x, t, self._prediction)
            prev = self._from_ve(step_from_noise(denoised, x, plan.grid[0]), plan.grid[0])
        elif k == 0 and plan.teleport_first and self._run.scaled_index != 0:
            # The pipeline never called scale_model_input: the model saw the initial sample, not the
            # teleported one its timestep stands for. Discard the output and teleport on to grid[1].
            logger.info(
                "GaussportScheduler: the pipeline does not call scale_model_input; the first model call "
                "is discarded and the teleport goes on to %g (teleport_at='step' pays one more call to "
                "teleport to sigma_skip itself).",
                plan.grid[1],
            )
            prev, denoised = self._teleport_step(x, plan.start, plan, 1)
        else:
            prev, denoised = self._solver_step(x, out, plan, j, first_call=k == 0)
        self._run.step_index = k + 1
        prev, denoised = prev.to(sample.dtype), denoised.to(sample.dtype)
        if not return_dict:
            return (prev, denoised)
        return GaussportSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def _teleport_step(self, x: Tensor, level: float, plan: Plan, offset: int) -> tuple[Tensor, Tensor]:
        """A discarded call on the sample at ``level``: teleport to ``grid[offset]``, where the solver
        starts; ``D`` of the warm start there."""
        to = plan.grid[offset]
        x_ve = self._to_ve(x, level)
        x_next = self._teleport(x_ve, level, to)
        if not math.isinf(level):  # the record flows from x_from: a finite start only
            self._run.teleport = Teleport(self.warm_start, level, x_ve, to)
        self._run.offset = offset
        if to == 0.0:
            return x_next, x_next
        sigma = torch.full((x.shape[0],), to, dtype=x.dtype, device=x.device)
        return self._from_ve(x_next, to), self.warm_start(x_next, sigma)

    def _solver_step(
        self, x: Tensor, out: Tensor, plan: Plan, j: int, *, first_call: bool
    ) -> tuple[Tensor, Tensor]:
        """Solver interval ``j``: the model output as ``D(x, grid[j])``, then ``solver.update``."""
        run = self._run
        if first_call and plan.teleport_first:  # as scale_model_input did to the model's input
            x_start = self._to_ve(x, plan.start)
            run.teleport = Teleport(self.warm_start, plan.start, x_start, plan.grid[0])
            x_ve = self._teleport(x_start, plan.start, plan.grid[0])
            x = self._from_ve(x_ve, plan.grid[0])
        else:
            x_ve = self._to_ve(x, plan.grid[j])
        t = torch.full((x.shape[0],), plan.grid_times[j], dtype=torch.float64, device=x.device)
        denoised = to_denoised(self._schedule, out, x, t, self._prediction).to(x.dtype)
        grid, i = plan.grid[run.offset :], j - run.offset
        if not run.solver_started:
            solver = self._run_solver
            if self.warm_start is not None:
                solver = with_warm_start_statistics(solver, self.warm_start, grid, cache=self._statistics)
            run.solver = solver
            run.solver_state = solver.init(x_ve, grid, run.teleport)
            run.solver_started = True
        x_next, run.solver_state = run.solver.update(x_ve, denoised, grid, i, run.solver_state)
        return self._from_ve(x_next, grid[i + 1]), denoised

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``x0`` noised to ``timesteps``, in the native coordinates the pipeline holds (img2img,
        inpainting, training): ``alpha x0 + sigma_t noise`` at the level each timestep names."""
        t = torch.as_tensor(timesteps, device=original_samples.device).to(torch.float64).flatten()
        if self._flow:
            t = t / self.config.num_train_timesteps
        if t.numel() == 1:
            t = t.expand(original_samples.shape[0])
        alpha, sigma = self._schedule.alpha_sigma(t)
        view = (-1,) + (1,) * (original_samples.ndim - 1)
        alpha = alpha.reshape(view).to(original_samples.dtype)
        sigma = sigma.reshape(view).to(original_samples.dtype)
        return original_samples * alpha + noise * sigma
