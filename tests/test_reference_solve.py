"""reference_solve (RK4 in lambda) against the closed-form Gaussian flow."""

from __future__ import annotations

import torch

import gaussport
from gaussport import grids
from gaussport.testing import anisotropic_gaussian


def test_reference_matches_closed_form() -> None:
    g = anisotropic_gaussian(dim=12, low=1e-4)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = gaussport.reference_solve(g, x, grids.karras(18, 0.002, 80.0, append_zero=False))
    exact = g.flow(x, 80.0, 0.002)
    assert float((ref - exact).norm() / exact.norm()) < 1e-9
    to_zero = gaussport.reference_solve(g, x, grids.karras(18, 0.002, 80.0))
    final = g(exact, torch.full((4,), 0.002, dtype=torch.float64))
    assert float((to_zero - final).norm() / final.norm()) < 1e-9
