"""Noise schedules: a model's native time ``t`` and the VE coordinates solvers use.

A linear-Gaussian diffusion has ``x_t = alpha(t) x0 + sigma(t) eps``. Dividing by ``alpha`` gives the
VE state ``x = x_t / alpha = x0 + sigma_ve eps`` with ``sigma_ve = sigma(t) / alpha(t)``; gaussport's
solvers only ever see ``(x, sigma_ve)``. This module is the one place that converts between a
model's parameterisation and VE coordinates (docs/conventions.md#coordinates-and-the-ode):

* schedules: :class:`VE` (EDM), :class:`VPDiscrete` (a DDPM ``alphas_cumprod`` table),
  :class:`VPLinear` and :class:`VPCosine` (continuous), :class:`RectifiedFlow` (``x_t = (1 - t) x0 + t eps``);
  each converts tensors (:meth:`~NoiseSchedule.t_of_sigma`, :meth:`~NoiseSchedule.to_native`, ...)
  and single levels as Python floats, for grids (:meth:`~NoiseSchedule.t_at`,
  :meth:`~NoiseSchedule.sigma_at`, :meth:`~NoiseSchedule.alpha_at`);
* predictions: :func:`to_denoised` / :func:`from_denoised` between ``x0`` and ``"epsilon"``, ``"v"``,
  ``"flow"`` (velocity ``dx_t/dt``);
* :class:`ScheduledDenoiser` wraps a native-time model ``model(x_t, t)`` into a VE denoiser, and
  :class:`NativeModel` does the inverse (e.g. an epsilon-model made from a Gaussian, for tests).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .denoiser import Denoiser

__all__ = [
    "NoiseSchedule",
    "VE",
    "VPDiscrete",
    "VPLinear",
    "VPCosine",
    "RectifiedFlow",
    "Prediction",
    "PREDICTION_ALIASES",
    "to_denoised",
    "from_denoised",
    "ScheduledDenoiser",
    "NativeModel",
]

Prediction = Literal["epsilon", "v", "x0", "flow"]
PREDICTION_ALIASES: dict[str, str] = {
    "epsilon": "epsilon",
    "eps": "epsilon",
    "noise": "epsilon",
    "v": "v",
    "v_prediction": "v",
    "x0": "x0",
    "sample": "x0",
    "x_start": "x0",
    "flow": "flow",
    "flow_prediction": "flow",
    "velocity": "flow",
}


def canonical_prediction(prediction: str) -> str:
    """The canonical name of a prediction type (accepts diffusers' and dpm-solver's names)."""
    try:
        return PREDICTION_ALIASES[prediction]
    except KeyError:
        raise ValueError(
            f"unsupported prediction type {prediction!r}; supported: epsilon, v (v_prediction), "
            "x0 (sample), flow (flow_prediction)."
        ) from None


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim)).to(like.dtype)


class NoiseSchedule(ABC):
    """``x_t = alpha(t) x0 + sigma(t) eps`` with native time ``t``, seen in VE coordinates.

    Subclasses implement :meth:`alpha_sigma` and :meth:`t_of_sigma`; everything else follows.
    """

    @abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha(t), sigma(t))`` of the native process."""

    @abstractmethod
    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        """The native time whose VE noise level ``sigma(t) / alpha(t)`` is ``sigma_ve``."""

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(d alpha / dt, d sigma / dt)``, needed for velocity (``"flow"``) predictions."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define time derivatives; "
            "flow predictions need RectifiedFlow or VE."
        )

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """The VE noise level ``sigma(t) / alpha(t)``."""
        alpha, sigma = self.alpha_sigma(t)
        return sigma / alpha

    def alpha_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        """``alpha`` at the time with VE level ``sigma_ve`` (so ``x_t = alpha * x_ve``)."""
        return self.alpha_sigma(self.t_of_sigma(sigma_ve))[0]

    # Python-float counterparts for single levels: grids are tuples of floats (docs/conventions.md#grids).
    def t_at(self, sigma_ve: float) -> float:
        """The native time of one VE level, as a Python float (:meth:`t_of_sigma` in float64)."""
        return float(self.t_of_sigma(torch.tensor([float(sigma_ve)], dtype=torch.float64))[0])

    def sigma_at(self, t: float) -> float:
        """The VE level of one native time, as a Python float (:meth:`sigma_of_t` in float64)."""
        return float(self.sigma_of_t(torch.tensor([float(t)], dtype=torch.float64))[0])

    def alpha_at(self, sigma_ve: float) -> float:
        """``alpha`` at one VE level, as a Python float: ``x_t = alpha_at(sigma) * x_ve``."""
        return float(self.alpha_of_sigma(torch.tensor([float(sigma_ve)], dtype=torch.float64))[0])

    def model_time(self, sigma_ve: Tensor) -> Tensor:
        """The time the model is called with at ``sigma_ve`` (the exact time unless quantised).

        Quantisation (``VPDiscrete(quantize=True)``) affects only this: the input scaling and the
        output conversion always use the true noise level, as k-diffusion's ``DiscreteSchedule``.
        """
        return self.t_of_sigma(sigma_ve)

    def to_native(self, x_ve: Tensor, sigma_ve: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, t)`` for a VE state ``x_ve`` at levels ``sigma_ve`` (shape ``[B]``), ``t`` exact."""
        t = self.t_of_sigma(sigma_ve)
        alpha, _ = self.alpha_sigma(t)
        return x_ve * _view(alpha, x_ve), t

    @property
    @abstractmethod
    def sigma_min(self) -> float:
        """The smallest VE noise level the schedule covers."""

    @property
    @abstractmethod
    def sigma_max(self) -> float:
        """The largest VE noise level the schedule covers (``inf`` for rectified flow at t = 1)."""


@dataclass(frozen=True)
class VE(NoiseSchedule):
    """Variance exploding / EDM: ``alpha = 1``, ``sigma(t) = t`` (Karras et al. 2022)."""

    min_sigma: float = 0.002
    max_sigma: float = 80.0

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t

    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        return sigma_ve

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    def t_at(self, sigma_ve: float) -> float:
        return float(sigma_ve)

    def sigma_at(self, t: float) -> float:
        return float(t)

    def alpha_at(self, sigma_ve: float) -> float:
        return 1.0

    @property
    def sigma_min(self) -> float:
        return self.min_sigma

    @property
    def sigma_max(self) -> float:
        return self.max_sigma


def _betas(beta_schedule: str, beta_start: float, beta_end: float, n: int) -> Tensor:
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(
        f"unknown beta_schedule {beta_schedule!r}; use linear, scaled_linear or squaredcos_cap_v2."
    )


class _VariancePreserving(NoiseSchedule):
    """``alpha^2 + sigma^2 = 1``, so ``alpha = 1 / sqrt(1 + sigma_ve^2)`` whatever the time axis."""

    def alpha_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        return torch.rsqrt(1 + sigma_ve * sigma_ve)

    def alpha_at(self, sigma_ve: float) -> float:
        return 1.0 / math.sqrt(1.0 + sigma_ve * sigma_ve)


@dataclass(frozen=True)
class VPDiscrete(_VariancePreserving):
    """A discrete DDPM schedule from its ``alphas_cumprod`` table (t = training index, 0..N-1).

    ``sigma_ve(t) = sqrt((1 - abar_t) / abar_t)``; fractional times interpolate ``log sigma_ve``
    linearly between neighbouring indexes, exactly as k-diffusion's ``DiscreteSchedule``
    (``quantize=False``) and diffusers' ``_sigma_to_t``. With ``quantize=True`` the model is called
    at the nearest index (k-diffusion ``quantize=True``, see :meth:`model_time`); conversions stay exact.
    """

    alphas_cumprod: Tensor
    quantize: bool = False
    log_sigmas: Tensor = field(init=False, repr=False)
    # Device copies of log_sigmas: one host-to-device copy per device, not one per model call.
    _device_tables: dict[torch.device, Tensor] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        table = torch.as_tensor(self.alphas_cumprod).detach().to("cpu", torch.float64).flatten()
        if table.numel() < 2 or not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values strictly between 0 and 1.")
        if not bool((table[1:] < table[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing in t.")
        object.__setattr__(self, "alphas_cumprod", table)
        object.__setattr__(self, "log_sigmas", 0.5 * torch.log((1 - table) / table))

    @classmethod
    def from_betas(
        cls,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        **kwargs: bool,
    ) -> VPDiscrete:
        """The table of a diffusers-style beta schedule.

        ``beta_schedule`` is ``"linear"``, ``"scaled_linear"`` or ``"squaredcos_cap_v2"``.
        """
        betas = _betas(beta_schedule, beta_start, beta_end, num_train_timesteps)
        return cls(torch.cumprod(1 - betas, 0), **kwargs)

    def _log_sigmas_on(self, device: torch.device) -> Tensor:
        table = self._device_tables.get(device)
        if table is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            table = self._device_tables.setdefault(device, self.log_sigmas.to(device=device, dtype=dtype))
        return table

    def sigma_of_t(self, t: Tensor) -> Tensor:
        log_sigmas = self._log_sigmas_on(t.device)
        t64 = t.to(log_sigmas.dtype).clamp(0, len(log_sigmas) - 1)
        low = t64.floor().long().clamp(max=len(log_sigmas) - 2)
        w = t64 - low
        return torch.exp((1 - w) * log_sigmas[low] + w * log_sigmas[low + 1]).to(t.dtype)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = self.sigma_of_t(t)
        alpha = torch.rsqrt(1 + s * s)
        return alpha, s * alpha

    def model_time(self, sigma_ve: Tensor) -> Tensor:
        if not self.quantize:
            return self.t_of_sigma(sigma_ve)
        log_sigmas = self._log_sigmas_on(sigma_ve.device)
        log_s = torch.log(sigma_ve.to(log_sigmas.dtype))
        return (log_s[..., None] - log_sigmas).abs().argmin(-1).to(sigma_ve.dtype)

    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        log_sigmas = self._log_sigmas_on(sigma_ve.device)
        log_s = torch.log(sigma_ve.to(log_sigmas.dtype))
        low = (torch.searchsorted(log_sigmas, log_s.contiguous(), right=True) - 1).clamp(
            0, len(log_sigmas) - 2
        )
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((log_s - lo) / (hi - lo)).clamp(0, 1)
        return (low + w).to(sigma_ve.dtype)

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())


@dataclass(frozen=True)
class VPLinear(_VariancePreserving):
    """Continuous VP with linear beta (Song et al. 2021): ``log alpha_t = -(b1 - b0) t^2 / 4 - b0 t / 2``.

    ``t`` in ``[t_min, 1]``; the inverse uses the closed form of DPM-Solver's ``inverse_lambda``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * (self.beta_max - self.beta_min) * t * t - 0.5 * self.beta_min * t

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        return log_alpha.exp(), torch.sqrt(-torch.expm1(2 * log_alpha))

    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        ell = torch.log1p(sigma_ve * sigma_ve)  # = -2 log alpha
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2 * ell / (torch.sqrt(b0 * b0 + 2 * db * ell) + b0)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_of_t(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_of_t(torch.tensor(1.0, dtype=torch.float64)))


@dataclass(frozen=True)
class VPCosine(_VariancePreserving):
    """Continuous cosine VP (Nichol & Dhariwal 2021).

    ``alpha_t = cos(pi/2 (t + s)/(1 + s)) / cos(pi/2 s/(1 + s))``.

    ``t`` in ``[t_min, t_max]`` with ``t_max = 0.9946`` (``t = 1`` is singular).
    """

    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.9946

    def _log_alpha0(self) -> float:
        return math.log(math.cos(math.pi / 2 * self.s / (1 + self.s)))

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = torch.log(torch.cos(math.pi / 2 * (t + self.s) / (1 + self.s))) - self._log_alpha0()
        return log_alpha.exp(), torch.sqrt(-torch.expm1(2 * log_alpha))

    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.log1p(sigma_ve * sigma_ve)
        return 2 * (1 + self.s) / math.pi * torch.arccos(torch.exp(log_alpha + self._log_alpha0())) - self.s

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_of_t(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_of_t(torch.tensor(self.t_max, dtype=torch.float64)))


@dataclass(frozen=True)
class RectifiedFlow(NoiseSchedule):
    """Rectified flow / flow matching (SD3, Flux): ``x_t = (1 - t) x0 + t eps``, ``t`` in ``[0, 1]``.

    ``sigma_ve = t / (1 - t)``, ``t = sigma_ve / (1 + sigma_ve)`` and ``alpha = 1 / (1 + sigma_ve)``;
    pure noise (``t = 1``) is ``sigma_ve = inf``, where the VE state ``x_t / (1 - t)`` is undefined,
    but the teleport from ``t = 1`` is finite in native coordinates
    (docs/warm-start.md#teleporting-from-pure-noise). The float methods accept that end point:
    ``sigma_at(1) = inf``, ``t_at(inf) = 1``, ``alpha_at(inf) = 0``.
    """

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, t

    def t_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        return sigma_ve / (1 + sigma_ve)

    def alpha_of_sigma(self, sigma_ve: Tensor) -> Tensor:
        return 1 / (1 + sigma_ve)  # not 1 - t: no cancellation at large sigma

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return -torch.ones_like(t), torch.ones_like(t)

    def t_at(self, sigma_ve: float) -> float:
        return 1.0 if math.isinf(sigma_ve) else sigma_ve / (1.0 + sigma_ve)

    def sigma_at(self, t: float) -> float:
        """The VE level ``t / (1 - t)`` of flow time ``t`` (``inf`` at ``t = 1``).

        Raises:
            ValueError: if ``t`` is outside ``[0, 1]``.
        """
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"rectified-flow times lie in [0, 1]; got {t}.")
        return math.inf if t == 1.0 else t / (1.0 - t)

    def alpha_at(self, sigma_ve: float) -> float:
        return 0.0 if math.isinf(sigma_ve) else 1.0 / (1.0 + sigma_ve)

    @property
    def sigma_min(self) -> float:
        return 0.0

    @property
    def sigma_max(self) -> float:
        return math.inf


def to_denoised(schedule: NoiseSchedule, output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """``x0`` from a model output of type ``prediction`` at native state ``x_t`` and time ``t``.

    * ``epsilon``: ``x0 = (x_t - sigma eps) / alpha``
    * ``v`` (``v = alpha eps - sigma x0``): ``x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``
    * ``x0``: unchanged
    * ``flow`` (``u = dx_t/dt = alpha' x0 + sigma' eps``):
      ``x0 = (sigma' x_t - sigma u) / (sigma' alpha - sigma alpha')``
    """
    kind = canonical_prediction(prediction)
    if kind == "x0":
        return output
    alpha, sigma = (_view(v, x_t) for v in schedule.alpha_sigma(t))
    if kind == "epsilon":
        return (x_t - sigma * output) / alpha
    if kind == "v":
        return (alpha * x_t - sigma * output) / (alpha * alpha + sigma * sigma)
    d_alpha, d_sigma = (_view(v, x_t) for v in schedule.derivatives(t))
    return (d_sigma * x_t - sigma * output) / (d_sigma * alpha - sigma * d_alpha)


def from_denoised(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The model output of type ``prediction`` that corresponds to ``x0`` (inverse of :func:`to_denoised`)."""
    kind = canonical_prediction(prediction)
    if kind == "x0":
        return x0
    alpha, sigma = (_view(v, x_t) for v in schedule.alpha_sigma(t))
    eps = (x_t - alpha * x0) / sigma
    if kind == "epsilon":
        return eps
    if kind == "v":
        return alpha * eps - sigma * x0
    d_alpha, d_sigma = (_view(v, x_t) for v in schedule.derivatives(t))
    return d_alpha * x0 + d_sigma * eps


@dataclass(frozen=True)
class ScheduledDenoiser:
    """A VE denoiser from a native-time model ``model(x_t, t) -> output``.

    ``D(x, sigma) = to_denoised(model(alpha x, model_time(sigma)), alpha x, t(sigma))``: the input is
    scaled to the model's coordinates and the output converted to ``x0``. ``time_scale`` multiplies
    the time passed to the model (e.g. 1000 for diffusers' flow-matching timesteps).
    """

    model: Callable[[Tensor, Tensor], Tensor]
    schedule: NoiseSchedule
    prediction: str = "epsilon"
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        canonical_prediction(self.prediction)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        x_t, t = self.schedule.to_native(x, sigma)
        t_model = self.schedule.model_time(sigma)
        output = self.model(x_t, t_model * self.time_scale if self.time_scale != 1.0 else t_model)
        return to_denoised(self.schedule, output.to(x_t.dtype), x_t, t, self.prediction)


@dataclass(frozen=True)
class NativeModel:
    """A native-time model ``model(x_t, t) -> output`` from a VE denoiser (inverse of ScheduledDenoiser).

    Used to build exact epsilon/v/flow models from a :class:`gaussport.analytic.Gaussian`.
    """

    denoiser: Denoiser
    schedule: NoiseSchedule
    prediction: str = "epsilon"
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        canonical_prediction(self.prediction)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x_t.device)
        t = (t / self.time_scale if self.time_scale != 1.0 else t).to(torch.float64).expand(x_t.shape[0])
        alpha, _ = self.schedule.alpha_sigma(t)
        sigma_ve = self.schedule.sigma_of_t(t)
        x0 = self.denoiser(x_t / _view(alpha, x_t), sigma_ve.to(x_t.dtype))
        return from_denoised(self.schedule, x0, x_t, t, self.prediction).to(x_t.dtype)
