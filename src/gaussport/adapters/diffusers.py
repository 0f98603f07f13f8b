"""diffusers: UNets and transformers as denoisers, a teleporting scheduler, latent statistics.

* :class:`DiffusersDenoiser` -- a diffusers model (``UNet2DModel``, ``UNet2DConditionModel``, a
  transformer) plus its scheduler's ``alphas_cumprod`` and ``prediction_type`` (or a FlowMatch
  scheduler) as a VE denoiser: ``sigma -> timestep`` by log-sigma interpolation (k-diffusion's
  ``DiscreteSchedule``, diffusers' ``_sigma_to_t``), input scaled to the model's coordinates, output
  converted to ``x0`` (ecosystem.md §3.2). Conditioning is bound at construction; guidance with
  :class:`~gaussport.adapters.guidance.ClassifierFreeGuidance`.
* ``GaussportScheduler`` -- a ``SchedulerMixin``/``ConfigMixin`` scheduler (Karras-compatible) that
  runs a gaussport single-evaluation solver, with the teleport, inside unmodified pipelines
  (ecosystem.md §3.3-3.4). Built on first access so that importing this module does not import
  diffusers.
* :func:`fit_latent_gaussian` -- Gaussian statistics of scaled VAE latents.

The third-party package is imported lazily, on first use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import grids
from .._checks import as_grid
from ..analytic import Gaussian
from ..schedules import NoiseSchedule, RectifiedFlow, VPDiscrete, to_denoised
from ..solvers import SingleEvaluationSolver, Teleport
from ..solvers import get as get_solver
from ._teleport import check_sample_shape, from_noise, load_statistics

__all__ = [
    "DiffusersDenoiser",
    "GaussportScheduler",  # noqa: F822  (built on first access: see __getattr__)
    "fit_latent_gaussian",
    "encode_latents",
    "PREDICTION_TYPES",
]

logger = logging.getLogger("gaussport")

# diffusers' names -> gaussport's (schedules.PREDICTION_ALIASES); FlowMatch models predict velocity.
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}


def _prediction(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported prediction_type {prediction_type!r}; gaussport's diffusers adapters support "
            f"{', '.join(map(repr, PREDICTION_TYPES))} (FlowMatch schedulers imply 'flow_prediction'). Set "
            "prediction_type to what the model was trained to predict (it is in the scheduler config of the "
            "checkpoint)."
        )
    return PREDICTION_TYPES[prediction_type]


def _config_get(obj: Any, key: str, default: Any = None) -> Any:
    config = getattr(obj, "config", None)
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def _is_flow_scheduler(scheduler: Any) -> bool:
    name = type(scheduler).__name__
    return (
        name.startswith("FlowMatch")
        or bool(_config_get(scheduler, "use_flow_sigmas", False))
        or _config_get(scheduler, "prediction_type") == "flow_prediction"
    )


def _model_output(out: Any, x: Tensor) -> Tensor:
    """The prediction tensor from a diffusers model's return value, checked against ``x``."""
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model returned {type(out).__name__}; expected a tensor or a diffusers output with .sample."
        )
    if (
        out.shape != x.shape
        and out.ndim == x.ndim
        and out.shape[1] == 2 * x.shape[1]
        and out.shape[2:] == x.shape[2:]
        and out.shape[0] == x.shape[0]
    ):
        # Learned-variance models (guided-diffusion, DeepFloyd, DiT) also output a variance: keep the mean.
        out = out[:, : x.shape[1]]
    if out.shape != x.shape:
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}; a denoiser "
            "needs a "
            "prediction with the input's shape (check the model's in_channels/out_channels and sample_size "
            "against "
            "the latents; learned-variance outputs with twice the channels are split automatically)."
        )
    return out


class DiffusersDenoiser:
    """A diffusers model with its noise schedule as a VE denoiser ``D(x, sigma) -> x0``.

    For VP (DDPM-family) schedulers: ``t = t(sigma)`` interpolating ``log sigma`` over the training
    table ``sigma_t = sqrt((1 - abar_t) / abar_t)``, model input ``x / sqrt(sigma^2 + 1)``, output
    converted by ``prediction_type`` (``epsilon``: ``x - sigma eps``; ``v_prediction``:
    ``x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v``; ``sample``: ``x0``) -- the formulas of
    k-diffusion's ``DiscreteEpsDDPMDenoiser``/``DiscreteVDDPMDenoiser`` and diffusers' Euler scheduler.
    For FlowMatch schedulers: ``t = sigma / (1 + sigma)``, input ``x / (1 + sigma)``, timestep
    ``t * num_train_timesteps``, ``x0 = x_t - t v``.

    Args:
        model: a diffusers model called as ``model(x_t, timestep=t, **kwargs)`` (``.sample`` or the
            first tuple entry is the prediction), or any such callable.
        scheduler: a diffusers scheduler to read ``alphas_cumprod``, ``prediction_type`` and
            ``num_train_timesteps`` from (or ``None`` with ``alphas_cumprod``).
        alphas_cumprod: the training table (overrides the scheduler's).
        prediction_type: ``"epsilon"``, ``"v_prediction"``, ``"sample"`` or ``"flow_prediction"``
            (overrides the scheduler's).
        time_scale: factor from native time to the model's timestep (FlowMatch: ``num_train_timesteps``;
            Flux transformers take ``t`` itself: pass 1). VP models take the fractional training index.
        quantize: round timesteps to the nearest training index (k-diffusion's ``quantize=True``).
        model_dtype: the dtype the model runs in (default: the model's ``dtype`` attribute). The
            scaling and the conversion to ``x0`` run in float32 (or float64) regardless.
        **model_kwargs: conditioning passed to every call (``encoder_hidden_states``, ``class_labels``,
            ``added_cond_kwargs``, ...).

    It is also a k-diffusion-style model: ``D(x, sigma, **extra)`` adds ``extra`` to the call.

    Raises:
        ValueError: for an unsupported ``prediction_type`` or a schedule that cannot be read.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        scheduler: Any = None,
        *,
        alphas_cumprod: Tensor | None = None,
        prediction_type: str | None = None,
        time_scale: float | None = None,
        quantize: bool = False,
        model_dtype: torch.dtype | None = None,
        **model_kwargs: Any,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable; got {type(model).__name__}.")
        self.model = model
        flow = (
            scheduler is not None and _is_flow_scheduler(scheduler)
        ) or prediction_type == "flow_prediction"
        prediction_type = prediction_type or (
            "flow_prediction" if flow else _config_get(scheduler, "prediction_type", "epsilon")
        )
        self.prediction = _prediction(prediction_type)
        self.schedule: NoiseSchedule
        if flow:
            if self.prediction != "flow":
                raise ValueError(
                    f"a flow-matching scheduler implies prediction_type='flow_prediction'; got "
                    f"{prediction_type!r}."
                )
            self.schedule = RectifiedFlow()
            steps = _config_get(scheduler, "num_train_timesteps", 1000)
            self.time_scale = float(steps if time_scale is None else time_scale)
        else:
            if self.prediction == "flow":
                raise ValueError(
                    "prediction_type='flow_prediction' needs a flow-matching schedule; pass the "
                    "FlowMatch scheduler instead of alphas_cumprod."
                )
            table = (
                alphas_cumprod if alphas_cumprod is not None else getattr(scheduler, "alphas_cumprod", None)
            )
            if table is None:
                raise ValueError(
                    "DiffusersDenoiser needs the noise schedule: pass the pipeline's scheduler (with "
                    "alphas_cumprod) or alphas_cumprod=."
                )
            # Quantisation changes only the timestep the model sees (VPDiscrete.model_time); the input
            # scaling and the output conversion use the true noise level, as k-diffusion's wrappers.
            self.schedule = VPDiscrete(torch.as_tensor(table), quantize=quantize)
            self.time_scale = 1.0 if time_scale is None else float(time_scale)
        self.model_dtype = model_dtype if model_dtype is not None else getattr(model, "dtype", None)
        if not isinstance(self.model_dtype, torch.dtype):
            self.model_dtype = None
        self.model_kwargs = model_kwargs

    @property
    def sigma_min(self) -> float:
        """The smallest VE level of the training schedule (flow: that of ``t = 1 / num_train_timesteps``)."""
        if isinstance(self.schedule, RectifiedFlow):
            t = 1.0 / self.time_scale if self.time_scale > 1 else 1e-3
            return t / (1 - t)
        return self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        """The largest VE level of the training schedule (``inf`` for flow matching: ``t = 1``)."""
        return self.schedule.sigma_max

    def timestep(self, sigma: Tensor) -> Tensor:
        """The model timestep for VE levels ``sigma``."""
        return self.schedule.model_time(sigma) * self.time_scale

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        work = torch.promote_types(x.dtype, torch.float32)
        x_t, t = self.schedule.to_native(x.to(work), sigma.to(work))
        t_model = self.schedule.model_time(sigma.to(work))
        timestep = t_model * self.time_scale if self.time_scale != 1.0 else t_model
        model_in = x_t if self.model_dtype is None else x_t.to(self.model_dtype)
        out = self.model(model_in, timestep=timestep, **self.model_kwargs, **extra)
        out = _model_output(out, x_t).to(work)
        return to_denoised(self.schedule, out, x_t, t, self.prediction).to(x.dtype)

    def __repr__(self) -> str:
        schedule = type(self.schedule).__name__
        return f"DiffusersDenoiser({type(self.model).__name__}, {schedule}, {self.prediction!r})"


# ----------------------------------------------------------------------------- latent statistics


def encode_latents(
    vae: Any, images: Tensor, *, latents: str = "sample", generator: torch.Generator | None = None
) -> Tensor:
    """Scaled latents of ``images`` (in [-1, 1]): ``(z - shift_factor) * scaling_factor``.

    ``latents="sample"`` draws ``z`` from ``vae.encode(images).latent_dist`` (what diffusers'
    training scripts feed the model, so the statistics match the model's data); ``"mean"`` takes the
    distribution's mean (deterministic; slightly lower variance).
    """
    if latents not in ("sample", "mean"):
        raise ValueError(f"latents must be 'sample' or 'mean'; got {latents!r}.")
    dtype = getattr(vae, "dtype", images.dtype)
    device = getattr(vae, "device", images.device)
    with torch.no_grad():
        dist = vae.encode(images.to(device=device, dtype=dtype)).latent_dist
        z = dist.sample(generator=generator) if latents == "sample" else dist.mean
    scaling = _config_get(vae, "scaling_factor", None)
    if scaling is None:
        raise ValueError("the VAE config has no scaling_factor; pass a diffusers AutoencoderKL (or set it).")
    shift = _config_get(vae, "shift_factor", None) or 0.0
    return (z.to(torch.float32) - shift) * scaling


def fit_latent_gaussian(
    vae: Any,
    images: Tensor | Iterable[Tensor],
    *,
    latents: str = "sample",
    generator: torch.Generator | None = None,
    batch_size: int = 32,
    representation: str = "dense",
    rank: int | None = None,
    source: str | None = None,
) -> Gaussian:
    """Fit the warm-start Gaussian in a latent model's space: statistics of scaled VAE latents.

    Args:
        vae: a diffusers ``AutoencoderKL`` (anything with ``encode(x).latent_dist`` and
            ``config.scaling_factor``; ``config.shift_factor`` is honoured when present, SD3/Flux).
        images: ``[N, C, H, W]`` images in [-1, 1] (diffusers' VAE convention), or an iterable of such
            batches (streamed: any dataset size).
        latents: ``"sample"`` (default; the latents the model was trained on) or ``"mean"``.
        generator: randomness for ``"sample"``.
        batch_size: encoding batch size when ``images`` is one tensor.
        representation: as in :meth:`gaussport.analytic.Gaussian.fit` (``"dense"`` forms a
            ``d x d`` matrix: 4x64x64 SD latents are d = 16,384, ~2 GiB in float64; use
            ``"diagonal"`` or fit ``"lowrank"`` at lower resolution for larger latents).
        rank: as in :meth:`gaussport.analytic.Gaussian.fit` (``"dense"`` forms a
            ``d x d`` matrix: 4x64x64 SD latents are d = 16,384, ~2 GiB in float64; use
            ``"diagonal"`` or fit ``"lowrank"`` at lower resolution for larger latents).
        source: provenance stored with the statistics.

    Returns:
        A Gaussian in the scaled latent space, i.e. the VE data coordinates of the latent model.
    """
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    encoded = (encode_latents(vae, b, latents=latents, generator=generator) for b in batches)
    scale = f"latents * scaling_factor ({latents})"
    return Gaussian.fit(encoded, representation=representation, rank=rank, scale=scale, source=source)


# ----------------------------------------------------------------------------- the scheduler


def _flow_shift(t: float, shift: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def _time_shift(mu: float, t: float, kind: str) -> float:
    if t <= 0.0:
        return 0.0
    if kind == "linear":
        return mu / (mu + (1 / t - 1))
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


class _Plan:
    """What each model call of a run is for (one entry per element of ``timesteps``).

    Kinds: ``"teleport"`` -- discard the output, teleport ``level -> grid[0]`` (pipelines that do not
    call ``scale_model_input``: one wasted evaluation); ``"noise"`` -- the first-order step from pure
    noise (flow matching at ``t = 1`` without warm start); ``"solve"`` -- solver interval ``j``.
    """

    def __init__(
        self,
        kinds: list[tuple[str, int]],
        levels: list[float],
        grid: tuple[float, ...],
        start: float,
        teleport_first: bool,
        grid_times: list[float],
    ) -> None:
        self.kinds = kinds
        self.levels = levels  # the VE level of the sample the pipeline holds at each call
        self.grid = grid  # the finite grid the solver integrates
        self.start = start  # the level the pipeline's initial sample is at
        self.teleport_first = teleport_first  # scale_model_input pipelines: teleport at call 0, no waste
        self.grid_times = grid_times  # native time (VP: training index; flow: t) of each finite grid level


def _build_scheduler_class() -> type:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput

    @dataclass
    class GaussportSchedulerOutput(BaseOutput):
        """``prev_sample``: the state for the next model call; ``pred_original_sample``: ``x0`` estimate."""

        prev_sample: Tensor
        pred_original_sample: Tensor | None = None

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
            self._prediction = _prediction(prediction_type)
            self._flow = self._prediction == "flow"
            if self._flow:
                self.alphas_cumprod = None
                self._schedule: NoiseSchedule = RectifiedFlow()
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
            self._scaled = mode == "scale_model_input"
            self._solver = get_solver(solver, **(solver_options or {}))
            if not isinstance(self._solver, SingleEvaluationSolver):
                raise ValueError(
                    "GaussportScheduler runs solvers that evaluate the model once per step (euler, the "
                    "multistep "
                    f"solvers); {solver!r} needs {type(self._solver).__name__}'s several evaluations per "
                    "step, which a "
                    "pipeline's one-call-per-timestep loop cannot provide. Use "
                    "gaussport.sample(DiffusersDenoiser(...), "
                    f"..., solver={solver!r}) instead."
                )
            if sigma_schedule not in (None, "karras", "exponential", "linspace"):
                raise ValueError(
                    f"sigma_schedule must be 'karras', 'exponential' or 'linspace'; got {sigma_schedule!r}."
                )
            self._warm: Any = None
            self.timesteps = torch.empty(0)
            self.sigmas = torch.empty(0)
            self.num_inference_steps: int | None = None
            self._plan: _Plan | None = None
            self._reset()

        # ---------------------------------------------------------------- diffusers API
        @classmethod
        def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
            """As diffusers' ``from_config``; a FlowMatch config implies ``'flow_prediction'``."""
            source = dict(config or {})
            flow_config = str(source.get("_class_name", "")).startswith("FlowMatch") or (
                "shift" in source and "beta_start" not in source and "prediction_type" not in source
            )
            if flow_config and "prediction_type" not in kwargs:
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
            return self._step_index

        @property
        def begin_index(self) -> int | None:
            return self._begin_index

        def set_begin_index(self, begin_index: int = 0) -> None:
            self._begin_index = int(begin_index)

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

        def _reset(self) -> None:
            self._step_index: int | None = None
            self._begin_index: int | None = None
            self._scaled_index: int | None = None
            self._state: Any = None
            self._state_ready = False
            self._handover: Teleport | None = None

        # ---------------------------------------------------------------- grids
        def _native_time(self, sigma: float) -> float:
            """The model's timestep for VE level ``sigma`` (VP: fractional training index; flow: t * T)."""
            steps = self.config.num_train_timesteps
            if self._flow:
                return steps * (1.0 if math.isinf(sigma) else sigma / (1 + sigma))
            return float(self._schedule.t_of_sigma(torch.tensor([sigma], dtype=torch.float64))[0])

        def _alpha(self, sigma: float) -> float:
            """``x_native = alpha * x_ve`` at VE level ``sigma``."""
            if self._flow:
                return 0.0 if math.isinf(sigma) else 1.0 / (1.0 + sigma)
            return 1.0 / math.sqrt(1.0 + sigma * sigma)

        def _flow_times(self, n: int | None, sigmas: Any, mu: float | None) -> list[float]:
            cfg = self.config
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
                    raise ValueError(
                        "use_dynamic_shifting needs mu (the pipeline passes it to set_timesteps)."
                    )
                return [_time_shift(mu, t, cfg.time_shift_type) for t in base]
            return [_flow_shift(t, cfg.shift) for t in base]

        def _full_grid(
            self, n: int | None, sigmas: Any, timesteps: Any, mu: float | None
        ) -> tuple[float, ...]:
            """The VE levels of a run without teleport, ending in 0 (flow matching may start at inf)."""
            cfg = self.config
            if self._flow:
                if timesteps is not None and sigmas is None:
                    ts = [float(t) / cfg.num_train_timesteps for t in timesteps]
                elif (cfg.sigma_schedule or "linspace") == "linspace" or sigmas is not None:
                    ts = self._flow_times(n, sigmas, mu)
                else:
                    ts = None
                if ts is not None:
                    if ts[-1] > 0:
                        ts.append(0.0)
                    if not all(0.0 <= t <= 1.0 for t in ts) or any(
                        b >= a for a, b in zip(ts, ts[1:], strict=False)
                    ):
                        raise ValueError(
                            f"flow-matching times must decrease strictly within [0, 1]; got {ts}."
                        )
                    return tuple(math.inf if t == 1.0 else t / (1 - t) for t in ts)
            if sigmas is not None:
                values = [float(s) for s in sigmas]
                return as_grid(values + ([0.0] if values[-1] > 0 else []), name="sigmas")
            if timesteps is not None:
                t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
                values = self._schedule.sigma_of_t(t).tolist()
                return as_grid(values + ([0.0] if values[-1] > 0 else []), name="sigmas from timesteps")
            if n is None:
                raise ValueError("pass num_inference_steps, sigmas or timesteps.")
            kind = cfg.sigma_schedule or ("linspace" if self._flow else "karras")
            lo = (
                cfg.sigma_min
                if cfg.sigma_min is not None
                else (1 / (cfg.num_train_timesteps - 1) if self._flow else self._schedule.sigma_min)
            )
            hi = cfg.sigma_max if cfg.sigma_max is not None else self._schedule.sigma_max
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
            return as_grid(self._schedule.sigma_of_t(idx).tolist() + [0.0], name="sigmas")

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
            full = self._full_grid(num_inference_steps, sigmas, timesteps, mu)
            warm = self.warm_start
            skip = self.config.sigma_skip
            if skip is not None and not float(skip) > 0:
                raise ValueError(f"sigma_skip must be a noise level > 0 (VE units); got {skip}.")
            teleport = warm is not None and skip is not None and float(skip) < full[0]
            if warm is None and skip is not None and self.config.statistics_path is None:
                logger.warning(
                    "GaussportScheduler: sigma_skip is set but no statistics are attached; not teleporting."
                )
            kinds: list[tuple[str, int]] = []
            levels: list[float] = []
            if teleport:
                s = float(skip)
                below = tuple(v for v in full if v < s and not math.isclose(v, s, rel_tol=1e-9))
                above = [v for v in full if math.isclose(v, s, rel_tol=1e-9)]
                grid = ((above[0] if above else s),) + below
                if not self._scaled:  # the first call sees the raw noise: its output is discarded
                    kinds.append(("teleport", -1))
                    levels.append(full[0])
                teleport_first = self._scaled
            else:
                grid = full
                teleport_first = False
                if math.isinf(full[0]):  # flow matching from pure noise: exact first-order step
                    kinds.append(("noise", -1))
                    levels.append(full[0])
                    grid = full[1:]
            for j in range(len(grid) - 1):
                kinds.append(("solve", j))
                levels.append(grid[j])
            scale = self.config.num_train_timesteps if self._flow else 1.0
            grid_times = [self._native_time(v) / scale for v in grid]
            self._plan = _Plan(kinds, levels, tuple(grid), full[0], teleport_first, grid_times)
            self.num_inference_steps = len(kinds)
            self.timesteps = torch.tensor(
                [self._native_time(v) for v in levels], dtype=torch.float32, device=device
            )
            native = [
                (1.0 if math.isinf(v) else v / (1 + v)) if self._flow else v for v in levels + [grid[-1]]
            ]
            self.sigmas = torch.tensor(native, dtype=torch.float32)
            self._reset()
            logger.debug(
                "GaussportScheduler: %d model calls, grid %s, teleport %s",
                len(kinds),
                grid,
                (full[0], grid[0]) if teleport else None,
            )

        # ---------------------------------------------------------------- per-call maths
        def _index(self) -> int:
            if self._step_index is None:
                self._step_index = self._begin_index or 0
            return self._step_index

        def _require_plan(self) -> _Plan:
            if self._plan is None:
                raise RuntimeError("call set_timesteps(num_inference_steps) before scale_model_input/step.")
            return self._plan

        def _teleport(self, x_ve: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
            warm = self.warm_start
            check_sample_shape(warm, x_ve.shape[1:], what="the pipeline's latents")
            if math.isinf(sigma_from):  # flow matching at t = 1: x_ve is the pure noise itself
                return from_noise(warm, x_ve, sigma_to)
            return warm.flow(x_ve, sigma_from, sigma_to)

        def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
            """The model input for the current call (teleporting the sample first at call 0)."""
            plan = self._require_plan()
            k = self._index()
            self._scaled_index = k
            if not self._scaled:
                return sample  # native coordinates: the model input is the state itself
            work = torch.promote_types(sample.dtype, torch.float32)
            x_ve = sample.to(work)
            if k == 0 and plan.teleport_first:
                x_ve = self._teleport(x_ve, plan.start, plan.grid[0])
            return (x_ve * self._alpha(plan.levels[k])).to(sample.dtype)

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
            if self._scaled and self._scaled_index != k:
                raise RuntimeError(
                    "GaussportScheduler(teleport_at='scale_model_input') needs the pipeline to call "
                    "scheduler.scale_model_input before every model call, and this one does not "
                    "(DDPM/DDIM/SD3/Flux "
                    "pipelines). Use GaussportScheduler.from_config(config, teleport_at='step', ...); with a "
                    "teleport "
                    "it costs one extra model evaluation."
                )
            kind, j = plan.kinds[k]
            work = torch.promote_types(sample.dtype, torch.float32)
            x = sample.to(work)
            out = _model_output(model_output, x).to(work)
            level = plan.levels[k]
            batch = x.shape[0]

            if kind == "teleport":  # the model saw raw noise; its output is not used
                x_ve = x / self._alpha(level) if not math.isinf(level) else x
                x_next = self._teleport(x_ve, level, plan.grid[0])
                if not math.isinf(level):
                    self._handover = Teleport(self.warm_start, level, x_ve, plan.grid[0])
                denoised = self.warm_start(
                    x_next, torch.full((batch,), plan.grid[0], dtype=work, device=x.device)
                )
                prev = x_next * self._alpha(plan.grid[0])
            elif kind == "noise":  # flow matching at t = 1: x0 = z - v, x_ve(s1) = x0 + s1 z
                t = torch.ones(batch, dtype=work, device=x.device)
                denoised = to_denoised(self._schedule, out, x, t, self._prediction)
                s1 = plan.grid[0]
                prev = (denoised + s1 * x) * self._alpha(s1) if s1 > 0 else denoised
            else:
                grid = plan.grid
                sigma = grid[j]
                if self._scaled:
                    x_ve = x
                    if k == 0 and plan.teleport_first:
                        self._handover = Teleport(self.warm_start, plan.start, x_ve, sigma)
                        x_ve = self._teleport(x_ve, plan.start, sigma)
                    x_t = x_ve * self._alpha(sigma)
                else:
                    x_t = x
                    x_ve = x / self._alpha(sigma)
                t_native = plan.grid_times[j]
                t = torch.full((batch,), t_native, dtype=torch.float64, device=x.device)
                denoised = to_denoised(self._schedule, out, x_t, t, self._prediction).to(work)
                if not self._state_ready:
                    self._state = self._solver.init(x_ve, grid, self._handover if j == 0 else None)
                    self._state_ready = True
                x_next, self._state = self._solver.update(x_ve, denoised, grid, j, self._state)
                prev = x_next if self._scaled else x_next * self._alpha(grid[j + 1])
            self._step_index = k + 1
            prev = prev.to(sample.dtype)
            if not return_dict:
                return (prev, denoised.to(sample.dtype))
            return GaussportSchedulerOutput(prev_sample=prev, pred_original_sample=denoised.to(sample.dtype))

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

    for cls in (GaussportScheduler, GaussportSchedulerOutput):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return GaussportScheduler


_SCHEDULER_CLASS: type | None = None


def __getattr__(name: str) -> Any:
    global _SCHEDULER_CLASS
    if name == "GaussportScheduler":
        if _SCHEDULER_CLASS is None:
            _SCHEDULER_CLASS = _build_scheduler_class()
        return _SCHEDULER_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
