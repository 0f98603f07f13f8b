"""Latent statistics: the warm-start Gaussian of a latent model, fitted to scaled VAE latents."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ...analytic import Gaussian
from ._common import config_get

__all__ = ["encode_latents", "fit_latent_gaussian"]


def encode_latents(
    vae: Any, images: Tensor, *, latents: str = "sample", generator: torch.Generator | None = None
) -> Tensor:
    """Scaled latents of ``images`` (in [-1, 1]): ``(z - shift_factor) * scaling_factor``.

    ``latents="sample"`` draws ``z`` from ``vae.encode(images).latent_dist`` (what diffusers'
    training scripts feed the model, so the statistics match the model's data); ``"mean"`` takes the
    distribution's mean (deterministic; slightly lower variance).

    Raises:
        ValueError: for another ``latents`` value, or a VAE config without ``scaling_factor``.
    """
    if latents not in ("sample", "mean"):
        raise ValueError(f"latents must be 'sample' or 'mean'; got {latents!r}.")
    dtype = getattr(vae, "dtype", images.dtype)
    device = getattr(vae, "device", images.device)
    with torch.no_grad():
        dist = vae.encode(images.to(device=device, dtype=dtype)).latent_dist
        z = dist.sample(generator=generator) if latents == "sample" else dist.mean
    scaling = config_get(vae, "scaling_factor", None)
    if scaling is None:
        raise ValueError("the VAE config has no scaling_factor; pass a diffusers AutoencoderKL (or set it).")
    shift = config_get(vae, "shift_factor", None) or 0.0
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
        rank: the number of eigenpairs ``"lowrank"`` keeps, as in :meth:`gaussport.analytic.Gaussian.fit`.
        source: provenance stored with the statistics.

    Returns:
        A Gaussian in the scaled latent space, i.e. the VE data coordinates of the latent model.
    """
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    encoded = (encode_latents(vae, b, latents=latents, generator=generator) for b in batches)
    scale = f"latents * scaling_factor ({latents})"
    return Gaussian.fit(encoded, representation=representation, rank=rank, scale=scale, source=source)
