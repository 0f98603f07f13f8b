"""Tiny models and states for the bad-input suite: every run takes a millisecond or so."""

from __future__ import annotations

from typing import Any

import torch

from gaussport.analytic import Gaussian

DIM = 2
GRID = (10.0, 4.0, 1.0, 0.3, 0.0)
"""A valid decreasing grid; ``UP`` is its inversion counterpart."""
UP = (0.3, 1.0, 4.0, 10.0)


def tiny_gaussian(dim: int = DIM) -> Gaussian:
    """A Gaussian of ``dim`` dimensions: the runs' model (its own exact denoiser) and their warm start."""
    return Gaussian(torch.linspace(0.5, -0.25, dim), torch.eye(dim) * 0.5)


def tiny_state(batch: int = 2, sigma: float = 10.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise at ``sigma`` for a batch of ``DIM``-d samples (a fixed seed)."""
    return (torch.randn(batch, DIM, generator=torch.Generator().manual_seed(0)) * sigma).to(dtype)


class TinyEps(torch.nn.Module):
    """A k-diffusion ``inner_model(x, t) -> eps``: one linear layer (6 parameters), fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(DIM, DIM)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.9, 0.1], [-0.1, 0.8]]))
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def eps_model(k_diffusion: Any, inner: Any) -> Any:
    """``inner(x, t) -> eps`` wrapped as k-diffusion wraps a DDPM (linear betas): sigma in [0.029, 14.6]."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, 0).float()
    return k_diffusion.external.DiscreteEpsDDPMDenoiser(inner, alphas_cumprod, quantize=False)
