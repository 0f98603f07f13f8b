"""Helpers for the adapter tests: an EDM-style net of our own.

The tiny diffusers models and the Gaussian-exact replacement forwards live in the public
:mod:`gaussport.testing.diffusers` (the benchmarks use them too).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from gaussport.analytic import Gaussian


class TinyEDMNet(nn.Module):
    """Our own small network with EDM's preconditioner interface (no NVlabs code).

    ``forward(x, sigma, class_labels=None, force_fp32=False, **kw)`` returns
    ``c_skip x + c_out F(c_in x, log(sigma) / 4, labels)`` with EDM's scalings for ``sigma_data``
    (Karras et al. 2022, Table 1). ``F`` is a small random conv net, or -- with ``gaussians`` -- the
    exact ``F`` for Gaussian data (one Gaussian per class for conditional nets), so ``D`` is the
    exact posterior mean. ``levels`` makes ``round_sigma`` snap to a discrete table (as iDDPM nets
    do); every sigma the net is called with is recorded in ``seen`` (unless ``record=False``).
    """

    def __init__(
        self,
        channels: int = 2,
        resolution: int = 4,
        label_dim: int = 0,
        *,
        sigma_min: float = 0.0,
        sigma_max: float = math.inf,
        sigma_data: float = 0.5,
        levels: Tensor | None = None,
        gaussians: list[Gaussian] | None = None,
        seed: int = 0,
        record: bool = True,
    ) -> None:
        super().__init__()
        self.img_resolution = resolution
        self.img_channels = channels
        self.label_dim = label_dim
        self.use_fp16 = False
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data
        self.levels = None if levels is None else torch.as_tensor(levels, dtype=torch.float64).sort().values
        self.gaussians = gaussians
        self.seen: list[float] = []
        self.record = record  # reading sigmas back synchronises with a GPU: off for the sync tests
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(channels + 1 + label_dim, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def round_sigma(self, sigma: Any) -> Tensor:
        sigma = torch.as_tensor(sigma)
        if self.levels is None:
            return sigma
        index = (sigma.to(torch.float64).reshape(-1, 1) - self.levels.reshape(1, -1)).abs().argmin(1)
        return self.levels[index].reshape(sigma.shape).to(sigma.dtype)

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        class_labels: Tensor | None = None,
        force_fp32: bool = False,
        **model_kwargs: Any,
    ) -> Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        if self.record:
            self.seen.extend(sigma.flatten().tolist())
        labels = (
            None
            if self.label_dim == 0
            else (
                torch.zeros(x.shape[0], self.label_dim, device=x.device)
                if class_labels is None
                else class_labels.to(torch.float32).reshape(-1, self.label_dim)
            )
        )
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        if self.gaussians is not None:
            return self._exact(x, sigma.flatten(), labels)
        noise = (sigma.log() / 4).expand(x.shape[0], 1, *x.shape[2:])
        parts = [x * c_in, noise]
        if labels is not None:
            parts.append(labels[:, :, None, None].expand(-1, -1, *x.shape[2:]))
        f = self.conv2(torch.tanh(self.conv1(torch.cat(parts, 1))))
        return c_skip * x + c_out * f

    def _exact(self, x: Tensor, sigma: Tensor, labels: Tensor | None) -> Tensor:
        x64, s64 = x.to(torch.float64), sigma.to(torch.float64).expand(x.shape[0])
        assert self.gaussians is not None
        if labels is None:
            return self.gaussians[0](x64, s64).to(torch.float32)
        cls = labels.argmax(1)
        out = torch.empty_like(x64)
        for k in cls.unique().tolist():
            rows = cls == k
            out[rows] = self.gaussians[k](x64[rows], s64[rows])
        return out.to(torch.float32)
