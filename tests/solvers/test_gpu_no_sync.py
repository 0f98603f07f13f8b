"""On CUDA the step loop of every solver runs without a host synchronisation (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # A Gaussian-like shrinkage written with tensor ops only (no .item(), no host reads).
    return x / (1.0 + sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2)


def test_no_host_sync_in_the_loop(solver_name: str) -> None:
    x = torch.randn(4, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 80.0
    sigmas = grids.karras(8, 0.002, 80.0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sol = gaussport.solve(_denoiser, x, sigmas, solver_name, disable=True, check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sol.x.device.type == "cuda"
    assert bool(torch.isfinite(sol.x).all())
