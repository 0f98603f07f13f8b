"""Latent statistics: the warm-start Gaussian of a latent model, fitted to scaled VAE latents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    images: Any,
    *,
    latents: str = "sample",
    generator: torch.Generator | None = None,
    batch_size: int = 32,
    representation: str = "dense",
    rank: int | None = None,
    source: str | None = None,
    image_scale: str | None = None,
    flip: bool = False,
    limit: int | None = None,
    disable: bool | None = None,
) -> Gaussian:
    """Fit the warm-start Gaussian in a latent model's space: statistics of scaled VAE latents.

    Every batch is encoded and scaled exactly as diffusers' pipelines and training scripts scale
    latents, ``(z - shift_factor) * scaling_factor`` (:func:`encode_latents`), and streamed into
    :meth:`gaussport.analytic.Gaussian.fit`. The images come from any source of
    :func:`gaussport.analytic.sources.as_batches`; each pass over them re-encodes, and with
    ``latents="sample"`` the generator is rewound at the start of every pass, so a fit that takes
    several passes (low rank) sees the same latents each time.

    Args:
        vae: a diffusers ``AutoencoderKL`` (anything with ``encode(x).latent_dist`` and
            ``config.scaling_factor``; ``config.shift_factor`` is honoured when present, SD3/Flux).
        images: ``[N, C, H, W]`` images in [-1, 1] (diffusers' VAE convention) as a tensor, a list,
            iterable or DataLoader of such batches, a ``.npy``/``.npz`` file, or a folder of PNG/JPEG
            images at the model's resolution (scaled from uint8 to [-1, 1] by default).
        latents: ``"sample"`` (default; the latents the model was trained on) or ``"mean"``.
        generator: randomness for ``"sample"``.
        batch_size: encoding batch size for tensors, files and folders.
        representation: as in :meth:`gaussport.analytic.Gaussian.fit`. Memory: ``"dense"`` peaks at
            about 3 ``d x d`` float64 matrices while fitting (4x64x64 SD latents: d = 16,384, about
            6.4 GB) and keeps one (2.1 GB); ``"lowrank"`` needs O(d r), ``"diagonal"`` O(d).
        rank: the number of eigenpairs ``"lowrank"`` keeps, as in :meth:`gaussport.analytic.Gaussian.fit`.
        source: provenance stored with the statistics (default: a description of ``images``).
        image_scale: the value scaling of ``images`` (``as_batches``'s ``scale``: ``"uint8_to_pm1"``
            is the default for folders, ``"none"`` for everything else).
        flip: add horizontal mirror images (EDM-style augmentation; doubles N).
        limit: encode the first ``limit`` images (before the flip).
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).

    Returns:
        A Gaussian in the scaled latent space, i.e. the VE data coordinates of the latent model.
    """
    from ...analytic.sources import as_batches

    pixels = as_batches(
        images, batch_size=batch_size, scale=image_scale, flip=flip, limit=limit, disable=disable
    )
    start = generator.get_state() if generator is not None and latents == "sample" else None

    def encoded() -> Iterator[Tensor]:
        if start is not None:
            generator.set_state(start)  # every pass draws the same latents
        for batch in pixels():
            yield encode_latents(vae, batch, latents=latents, generator=generator)

    scale = f"latents * scaling_factor ({latents})"
    source = source if source is not None else f"VAE latents ({latents}) of {pixels.description}"
    stream = _Passes(encoded)
    return Gaussian.fit(stream, representation=representation, rank=rank, scale=scale, source=source)


class _Passes:
    """A zero-argument callable that is also an iterable: each call or ``iter`` is a fresh pass."""

    def __init__(self, passes: Callable[[], Iterator[Tensor]]) -> None:
        self._passes = passes

    def __call__(self) -> Iterator[Tensor]:
        return self._passes()

    def __iter__(self) -> Iterator[Tensor]:
        return self._passes()
