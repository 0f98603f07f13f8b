"""Euler's method in sigma."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .._checks import Grid
from .base import SingleEvaluationSolver
from .registry import register


@register("euler", summary="Euler in sigma (k-diffusion sample_euler, Karras et al. 2022)")
@dataclass(frozen=True, slots=True)
class Euler(SingleEvaluationSolver[None]):
    """Euler's method on the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``.

    ``x_next = x + (sigma_next - sigma) * (x - D) / sigma``; the step to ``sigma = 0`` gives ``D``.

    Order 1; 1 denoiser evaluation per step; stateless.

    References:
        Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
        NeurIPS 2022 (Algorithm 1 without the Heun correction). Same update as k-diffusion's
        ``sample_euler`` with ``s_churn=0``, which however draws ``randn_like`` every step.
    """

    supports_inversion: ClassVar[bool] = True  # the same update upwards (k-diffusion on flipped sigmas)

    @property
    def order(self) -> int:
        return 1

    def advance(self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: None) -> tuple[Tensor, None]:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        return x + (x - denoised) * ((sigma_next - sigma) / sigma), None
