"""Device behaviour of the adapters: torch.compile-friendly denoisers (CPU) and sync-free loops (CUDA).

The GPU tests run the solver loop (``gaussport.loop.integrate``, the one step loop) and the
scheduler's steps under ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation inside
them raises. One-time work before the loop (validating inputs, copying tables to the device, the
teleport) is done before the mode is switched on. They are skipped without CUDA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from adapter_helpers import TinyEDMNet
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters.edm import EDMDenoiser
from gaussport.adapters.flow import RectifiedFlowDenoiser
from gaussport.adapters.guidance import ClassifierFreeGuidance
from gaussport.adapters.k_diffusion import KDiffusionDenoiser
from gaussport.denoiser import DenoiserCall
from gaussport.loop import integrate
from gaussport.testing import gaussian_of_shape
from gaussport.testing.diffusers import tiny_unet

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


DENOISERS = ("diffusers", "diffusers-quantized", "edm", "flow", "cfg", "k-diffusion")


def _denoiser(name: str, device: str, diffusers_pkg: Any) -> Any:
    """One adapter around a tiny model (only the one asked for is built)."""
    if name.startswith("diffusers"):
        from gaussport.adapters.diffusers import DiffusersDenoiser

        sched = diffusers_pkg.EulerDiscreteScheduler()
        return DiffusersDenoiser(tiny_unet().to(device), sched, quantize=name == "diffusers-quantized")
    if name == "edm":
        net = TinyEDMNet(channels=3, resolution=8, label_dim=2, record=False).to(device)
        return EDMDenoiser(net, torch.tensor([0, 1]))
    if name == "flow":
        # A closed-form velocity in t (the adapter's conversions are what is compiled; the UNet's
        # own graph is the "diffusers" case's).
        return RectifiedFlowDenoiser(
            lambda x, t: torch.cos(t / 999.0)[:, None, None, None] * x - t[:, None, None, None] / 999.0,
            time_scale=999.0,
        )
    if name == "cfg":
        return ClassifierFreeGuidance(
            lambda x, s, c: x * c,
            3.0,
            {"c": torch.ones(2, 1, 1, 1, device=device)},
            {"c": torch.zeros(2, 1, 1, 1, device=device)},
        )
    return KDiffusionDenoiser(
        lambda x, s, scale: x / (1 + s[:, None, None, None] ** 2) * scale, {"scale": 2.0}
    )


# Tracing the tiny UNet takes ~2-4 s each on 2 CPU cores: those two cases run in the slow set.
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n.startswith("diffusers") else n for n in DENOISERS],
)
def test_denoisers_compile_without_graph_breaks(name: str, diffusers_pkg: Any) -> None:
    den = _denoiser(name, "cpu", diffusers_pkg)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        expected = den(x, sigma)
        compiled = torch.compile(den, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
        assert torch.allclose(compiled(x, sigma), expected)


@contextmanager
def no_host_sync() -> Iterator[None]:
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("solver", gaussport.solvers.available())
@pytest.mark.parametrize("name", DENOISERS)
def test_solver_loop_never_synchronises(solver: str, name: str, diffusers_pkg: Any) -> None:
    den = _denoiser(name, "cuda", diffusers_pkg)
    x = torch.randn(2, 3, 8, 8, device="cuda") * 14.0
    grid = grids.karras(8, 0.03, 14.0)
    call = DenoiserCall(den, model_dtype=torch.float32, state_dtype=torch.float32)
    solver_obj = gaussport.solvers.get(solver)
    with torch.no_grad():
        call(x, grid[0])  # warm-up: per-device copies of tables and labels are made once, here
        with no_host_sync():
            out, _ = integrate(call, solver_obj, x, grid, disable=True)
        torch.cuda.synchronize()
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


@pytest.mark.gpu
@cuda
def test_scheduler_steps_never_synchronise(diffusers_pkg: Any) -> None:
    from gaussport.adapters.diffusers import GaussportScheduler

    unet = tiny_unet().to("cuda")
    sched = GaussportScheduler(sigma_skip=2.0)
    sched.set_warm_start(gaussian_of_shape((3, 8, 8), seed=0))
    sched.set_timesteps(12, device="cuda")
    x = torch.randn(2, 3, 8, 8, device="cuda") * sched.init_noise_sigma
    with torch.no_grad():
        for k, t in enumerate(sched.timesteps):

            def one_step(x: Tensor, t: Tensor = t) -> Tensor:
                return sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample

            if k == 0:  # the teleport: one-time Gaussian set-up on the device
                x = one_step(x)
            else:
                with no_host_sync():
                    x = one_step(x)
    torch.cuda.synchronize()
    assert bool(torch.isfinite(x).all())


@pytest.mark.gpu
@cuda
def test_k_diffusion_sampler_with_sigmas_on_the_device(diffusers_pkg: Any) -> None:
    from gaussport.adapters import k_diffusion as gk

    den = _denoiser("diffusers", "cuda", diffusers_pkg)
    sigmas = torch.tensor(grids.karras(6, 0.03, 14.0))
    x = torch.randn(2, 3, 8, 8, device="cuda") * 14.0
    seen: list[dict[str, Any]] = []
    on_device = gk.sample_euler(den, x, sigmas.cuda(), callback=seen.append, disable=True)
    on_host = gk.sample_euler(den, x, sigmas, disable=True)
    assert torch.allclose(on_device, on_host, rtol=1e-5, atol=1e-5)
    assert all(d["sigma"].device.type == "cuda" for d in seen)
