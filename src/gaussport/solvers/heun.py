"""Heun's second-order method in sigma (EDM Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..denoiser import DenoiserCall
from .base import TwoStageSolver
from .registry import register


@register("heun", summary="Heun's second-order method in sigma (EDM's deterministic sampler)")
@dataclass(frozen=True, slots=True)
class Heun(TwoStageSolver):
    """Heun's method (explicit trapezoid) on ``dx/dsigma = (x - D(x, sigma)) / sigma``.

    An Euler predictor to ``sigma_next`` followed by the trapezoidal correction with the slope
    there. The step to ``sigma = 0`` is the Euler step alone (the slope is undefined at 0), so a
    grid of n intervals ending in 0 costs ``2n - 1`` evaluations.

    Order 2; 2 denoiser evaluations per step (1 on a final step to 0); stateless.

    References:
        Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
        NeurIPS 2022, Algorithm 1 (deterministic sampler; no churn). Same update as k-diffusion's
        ``sample_heun`` with ``s_churn=0``.
    """

    supports_inversion: ClassVar[bool] = True  # upwards the second stage is always taken (no step to 0)

    @property
    def order(self) -> int:
        return 2

    def second_stage(
        self, denoiser: DenoiserCall, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float
    ) -> Tensor:
        dt = sigma_next - sigma
        slope = (x - denoised) / sigma
        x_euler = x + slope * dt
        slope_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
        return x + (slope + slope_next) * (0.5 * dt)
