"""fit_latent_gaussian from the data sources of gaussport.analytic.sources (a tiny random AutoencoderKL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gaussport.adapters.diffusers import fit_latent_gaussian
from gaussport.analytic.sources import as_batches

RNG = np.random.default_rng(6)


def test_latent_statistics_from_an_image_folder_scale_as_the_pipeline(tmp_path: Path, tiny_vae: Any) -> None:
    vae = tiny_vae
    vae.register_to_config(shift_factor=0.25)  # SD3/Flux-style VAEs shift before scaling
    (tmp_path / "images").mkdir()
    for k, image in enumerate(RNG.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(image).save(tmp_path / "images" / f"{k:02d}.png")
    pixels = torch.cat(list(as_batches(tmp_path / "images", disable=True)()))  # [-1, 1]
    with torch.no_grad():
        z = vae.encode(pixels).latent_dist.mean
    expected = ((z - 0.25) * vae.config.scaling_factor).double()  # the pipeline's scaling, directly
    fitted = fit_latent_gaussian(
        vae, tmp_path / "images", latents="mean", representation="diagonal", batch_size=5
    )
    assert (
        fitted.shape == (4, 4, 4) and fitted.n_samples == 12 and "12 images 8x8 RGB" in (fitted.source or "")
    )
    torch.testing.assert_close(fitted.mean, expected.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(fitted.cov.variances, expected.reshape(12, -1).var(0), rtol=0, atol=1e-6)  # type: ignore[attr-defined]
    # Sampled latents: every pass rewinds the generator, so a multi-pass low-rank fit sees one data set.
    runs = [
        fit_latent_gaussian(
            vae,
            tmp_path / "images",
            representation="lowrank",
            rank=2,
            generator=torch.Generator().manual_seed(4),
        )
        for _ in range(2)
    ]
    torch.testing.assert_close(runs[0].mean, runs[1].mean, rtol=0, atol=0)
