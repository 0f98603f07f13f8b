"""A diffusers model with its noise schedule as a VE denoiser, and the model-output handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ...schedules import NoiseSchedule, RectifiedFlow, VPDiscrete, to_denoised
from ._common import config_get, is_flow_scheduler, prediction_of

__all__ = ["DiffusersDenoiser", "model_prediction"]


def model_prediction(out: Any, x: Tensor) -> Tensor:
    """The prediction tensor from a diffusers model's return value, checked against ``x``.

    ``.sample`` or the first tuple entry is the prediction; learned-variance outputs (twice the
    channels of ``x``) keep the first half, as diffusers' pipelines do.

    Raises:
        TypeError: if the model returned no tensor.
        ValueError: if the prediction's shape is not that of ``x``.
    """
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
            "needs a prediction with the input's shape (check the model's in_channels/out_channels and "
            "sample_size against the latents; learned-variance outputs with twice the channels are split "
            "automatically)."
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
    ``t * num_train_timesteps``, ``x0 = x_t - t v``. The conversions are those of
    :class:`gaussport.schedules.VPDiscrete` and :class:`gaussport.schedules.RectifiedFlow`
    (docs/adapters.md#diffusers).

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
            scheduler is not None and is_flow_scheduler(scheduler)
        ) or prediction_type == "flow_prediction"
        prediction_type = prediction_type or (
            "flow_prediction" if flow else config_get(scheduler, "prediction_type", "epsilon")
        )
        self.prediction = prediction_of(prediction_type)
        self.schedule: NoiseSchedule
        if flow:
            if self.prediction != "flow":
                raise ValueError(
                    f"a flow-matching scheduler implies prediction_type='flow_prediction'; got "
                    f"{prediction_type!r}."
                )
            self.schedule = RectifiedFlow()
            steps = config_get(scheduler, "num_train_timesteps", 1000)
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
            return self.schedule.sigma_at(1.0 / self.time_scale if self.time_scale > 1 else 1e-3)
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
        out = model_prediction(out, x_t).to(work)
        return to_denoised(self.schedule, out, x_t, t, self.prediction).to(x.dtype)

    def __repr__(self) -> str:
        schedule = type(self.schedule).__name__
        return f"DiffusersDenoiser({type(self.model).__name__}, {schedule}, {self.prediction!r})"
