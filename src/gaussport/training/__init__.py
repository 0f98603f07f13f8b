"""Training with the Gaussian built in: pieces for any PyTorch training loop.

* :class:`GaussianResidualDenoiser` -- ``D = D_G + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))``;
* losses as plain functions: the EDM denoising loss and the opt-in ``bootstrapped_dsm_loss``;
* a small trainer (EMA, progress bar, safetensors checkpoints, exact resume).
"""

from __future__ import annotations

from .losses import bootstrapped_dsm_loss, edm_loss, gated_bootstrap_target
from .residual import GaussianResidualDenoiser
from .trainer import Trainer, TrainerConfig

__all__: list[str] = [
    "GaussianResidualDenoiser",
    "bootstrapped_dsm_loss",
    "edm_loss",
    "gated_bootstrap_target",
    "Trainer",
    "TrainerConfig",
]
