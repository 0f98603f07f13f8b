"""diffusers: UNets and transformers as denoisers, a teleporting scheduler, latent statistics.

* :class:`~gaussport.adapters.diffusers.denoiser.DiffusersDenoiser` -- a diffusers model
  (``UNet2DModel``, ``UNet2DConditionModel``, a transformer) plus its scheduler's ``alphas_cumprod``
  and ``prediction_type`` (or a FlowMatch scheduler) as a VE denoiser: ``sigma -> timestep`` by
  log-sigma interpolation (k-diffusion's ``DiscreteSchedule``, diffusers' ``_sigma_to_t``), input
  scaled to the model's coordinates, output converted to ``x0`` by :mod:`gaussport.schedules`.
  Conditioning is bound at construction; guidance with
  :class:`~gaussport.adapters.guidance.ClassifierFreeGuidance`.
* :class:`~gaussport.adapters.diffusers.scheduler.GaussportScheduler` -- a
  ``SchedulerMixin``/``ConfigMixin`` scheduler (Karras-compatible) that runs a gaussport
  single-evaluation solver, with the teleport, inside unmodified pipelines -- every kind of pipeline
  loop, with no option (docs/adapters.md#which-pipelines-and-workflows-are-covered).
* :func:`~gaussport.adapters.diffusers.latents.fit_latent_gaussian` -- Gaussian statistics of
  scaled VAE latents.

Modules: ``denoiser``, ``latents``, ``scheduler`` (the only one that imports diffusers). Importing
this package does not import diffusers: ``GaussportScheduler`` is imported on first access. Usage
and the behaviour per pipeline type: docs/adapters.md#diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import PREDICTION_TYPES
from .denoiser import DiffusersDenoiser
from .latents import encode_latents, fit_latent_gaussian

if TYPE_CHECKING:
    from .scheduler import GaussportScheduler, GaussportSchedulerOutput

__all__ = [
    "DiffusersDenoiser",
    "GaussportScheduler",
    "GaussportSchedulerOutput",
    "fit_latent_gaussian",
    "encode_latents",
    "PREDICTION_TYPES",
]

_SCHEDULER_NAMES = ("GaussportScheduler", "GaussportSchedulerOutput")


def __getattr__(name: str) -> Any:
    # PEP 562: the scheduler module imports diffusers, so it is imported on first access only.
    if name in _SCHEDULER_NAMES:
        from . import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
