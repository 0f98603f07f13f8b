"""Parity with k-diffusion's samplers (installed from PyPI by the test extra), float64, same grid."""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import anisotropic_mixture

ks = pytest.importorskip("k_diffusion.sampling")
pytestmark = pytest.mark.reference

PAIRS = {"euler": ks.sample_euler, "heun": ks.sample_heun}


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize(
    "sigmas",
    [
        grids.karras(12, 0.002, 80.0),
        grids.exponential(7, 0.05, 14.6, append_zero=False),
        (3.0, 1.0, 0.2, 0.0),
    ],
    ids=["karras-to-zero", "exponential-to-sigma_min", "start-mid"],
)
def test_matches_k_diffusion(name: str, sigmas: tuple[float, ...]) -> None:
    mixture = anisotropic_mixture(dim=8, n_components=3, seed=2)  # nonlinear denoiser
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = PAIRS[name](mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True)
    ours = gaussport.solve(mixture, x, sigmas, name, disable=True).x
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-10
