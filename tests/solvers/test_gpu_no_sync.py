"""On CUDA the step loop of every solver runs without a host synchronisation (skipped without CUDA).

The loop is run through :func:`gaussport.loop.integrate`, as in tests/adapters/test_device.py: the
entry points validate their input once before it (``check_state`` reads ``isfinite`` on the host),
which is outside the loop by design (docs/conventions.md#grids).
"""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.denoiser import DenoiserCall
from gaussport.loop import integrate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # A Gaussian-like shrinkage written with tensor ops only (no .item(), no host reads).
    return x / (1.0 + sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2)


def _loop_without_sync(solver_name: str, x: torch.Tensor, grid: tuple[float, ...]) -> torch.Tensor:
    call = DenoiserCall(_denoiser, model_dtype=torch.float32, state_dtype=torch.float32)
    solver = gaussport.solvers.get(solver_name)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, _ = integrate(call, solver, x, grid, disable=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return out


def test_no_host_sync_in_the_loop(solver_name: str) -> None:
    x = torch.randn(4, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 80.0
    out = _loop_without_sync(solver_name, x, grids.karras(8, 0.002, 80.0))
    assert out.device.type == "cuda" and bool(torch.isfinite(out).all())
    sol = gaussport.solve(_denoiser, x, grids.karras(8, 0.002, 80.0), solver_name, disable=True)
    assert torch.allclose(sol.x, out)


def test_no_host_sync_in_an_inversion(solver_name: str) -> None:
    # Upwards the loop is the same loop: no host read per step. The reverse teleport after it runs
    # on the device too (one affine map, outside the loop) and agrees with the CPU.
    from gaussport.inversion import invert
    from gaussport.testing import gaussian_of_shape

    if not gaussport.solvers.get(solver_name).supports_inversion:
        pytest.skip(f"{solver_name} does not support inversion")
    x = torch.randn(4, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    up = grids.karras(8, 0.002, 80.0, append_zero=False)[::-1]
    out = _loop_without_sync(solver_name, x, up)
    assert out.device.type == "cuda" and bool(torch.isfinite(out).all())
    g = gaussian_of_shape((3, 8, 8), seed=0)
    x64 = x.double()
    on_gpu = invert(g, x64, up, solver_name, warm_start=g, sigma_skip=1.0, disable=True)
    on_cpu = invert(g, x64.cpu(), up, solver_name, warm_start=g, sigma_skip=1.0, disable=True)
    assert on_gpu.x.device.type == "cuda"
    assert torch.allclose(on_gpu.x.cpu(), on_cpu.x, rtol=1e-10, atol=1e-10)
