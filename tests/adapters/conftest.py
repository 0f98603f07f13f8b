"""Fixtures for the adapter tests: tiny diffusers models built offline (diffusers' own test recipes,
ecosystem.md §3.5), randomly initialised with a fixed seed; nothing is downloaded."""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture(scope="session")
def diffusers_pkg() -> Any:
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def k_diffusion_pkg() -> Any:
    return pytest.importorskip("k_diffusion")


@pytest.fixture()
def tiny_unet(diffusers_pkg: Any) -> Any:
    """diffusers' DDPM test UNet (11,767 parameters), 3x8x8, seed 0."""
    torch.manual_seed(0)
    return diffusers_pkg.UNet2DModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


@pytest.fixture()
def tiny_vae(diffusers_pkg: Any) -> Any:
    torch.manual_seed(0)
    return diffusers_pkg.AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    ).eval()


@pytest.fixture()
def tiny_cond_unet(diffusers_pkg: Any) -> Any:
    """diffusers' Stable Diffusion test UNet, 4x8x8 latents, cross-attention dim 8."""
    torch.manual_seed(0)
    return diffusers_pkg.UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    ).eval()
