"""Helpers for the adapter tests: Gaussian-exact models and an EDM-style net of our own.

Tiny diffusers models follow diffusers' own test recipes (ecosystem.md §3.5), randomly initialised
with a fixed seed; nothing is downloaded. "Gaussian-exact" models replace a real model's forward by
the exact prediction for Gaussian data (built with gaussport.schedules.NativeModel from the
closed-form Gaussian denoiser), so every sampler's error can be measured against the closed-form
flow while the pipelines, schedulers and wrappers around the model stay the real ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from gaussport import schedules
from gaussport.analytic import Dense, Gaussian


def gaussian_of_shape(
    shape: tuple[int, ...], *, seed: int = 0, high: float = 2.0, low: float = 1e-3, mean_scale: float = 0.3
) -> Gaussian:
    """A float64 Gaussian with a random basis, log-spaced spectrum in [low, high] and a random mean."""
    d = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    lam = torch.exp(torch.linspace(math.log(high), math.log(low), d, dtype=torch.float64))
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    mean = mean_scale * torch.randn(d, generator=gen, dtype=torch.float64)
    return Gaussian(mean.reshape(shape), Dense(lam, basis))


class Output:
    """A diffusers-style model output (``.sample``)."""

    def __init__(self, sample: Tensor) -> None:
        self.sample = sample


class ExactForward:
    """A replacement ``forward`` returning a Gaussian-exact prediction; counts calls and batch sizes.

    ``native(x_t, t)`` is the exact model in the scheduler's native time (a NativeModel); the
    signature accepts what diffusers pipelines pass to UNets and transformers.
    """

    def __init__(
        self,
        native: Callable[[Tensor, Tensor], Tensor],
        *,
        at_pure_noise: Callable[[Tensor], Tensor] | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.native = native
        self.at_pure_noise = at_pure_noise
        self.time_scale = time_scale
        self.calls = 0
        self.batches: list[int] = []
        self.timesteps: list[float] = []

    def __call__(
        self,
        sample: Tensor | None = None,
        timestep: Any = None,
        *args: Any,
        hidden_states: Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        x = (sample if sample is not None else hidden_states).to(torch.float64)
        self.calls += 1
        self.batches.append(x.shape[0])
        t = torch.as_tensor(timestep, dtype=torch.float64, device=x.device).expand(x.shape[0])
        self.timesteps.append(float(t[0]))
        out = torch.empty_like(x)
        noise = (
            t / self.time_scale >= 1.0
            if self.at_pure_noise is not None
            else torch.zeros_like(t, dtype=torch.bool)
        )
        if bool(noise.any()):
            out[noise] = self.at_pure_noise(x[noise])
        if bool((~noise).any()):
            out[~noise] = self.native(x[~noise], t[~noise])
        out = out.to(torch.float32)
        return Output(out) if return_dict else (out,)


def vp_exact(gaussian: Gaussian, alphas_cumprod: Tensor, prediction: str = "epsilon") -> ExactForward:
    """An exact epsilon/v/x0 model for a discrete VP schedule (timesteps = fractional training index)."""
    return ExactForward(schedules.NativeModel(gaussian, schedules.VPDiscrete(alphas_cumprod), prediction))


def flow_exact(gaussian: Gaussian, time_scale: float = 1000.0) -> ExactForward:
    """An exact velocity model for rectified flow (timestep = t * time_scale); at t = 1, v = x - mu."""
    native = schedules.NativeModel(gaussian, schedules.RectifiedFlow(), "flow", time_scale=time_scale)
    mean = gaussian.mean

    def at_noise(x: Tensor) -> Tensor:  # E[eps - x0 | x_1 = eps] = x - mu
        return x - mean.to(x)

    return ExactForward(native, at_pure_noise=at_noise, time_scale=time_scale)


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
