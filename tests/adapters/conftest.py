"""Fixtures for the adapter tests: tiny diffusers models built offline (diffusers' own test recipes,
docs/peer-conventions.md#tiny-random-models-for-offline-tests), randomly initialised with a fixed
seed; nothing is downloaded."""

from __future__ import annotations

from typing import Any

import pytest

from gaussport.testing import diffusers as tiny


@pytest.fixture(scope="session")
def diffusers_pkg() -> Any:
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def k_diffusion_pkg() -> Any:
    return pytest.importorskip("k_diffusion")


@pytest.fixture()
def tiny_unet(diffusers_pkg: Any) -> Any:
    """diffusers' DDPM test UNet (11,767 parameters), 3x8x8, seed 0."""
    return tiny.tiny_unet()


@pytest.fixture()
def tiny_vae(diffusers_pkg: Any) -> Any:
    return tiny.tiny_vae()


@pytest.fixture()
def tiny_cond_unet(diffusers_pkg: Any) -> Any:
    """diffusers' Stable Diffusion test UNet, 4x8x8 latents, cross-attention dim 8."""
    return tiny.tiny_cond_unet()
