"""solve(): the loop, callbacks, resume, dtype policy, NFE, bad input."""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.testing import CountingDenoiser, anisotropic_gaussian


def _setup(n: int = 6):  # type: ignore[no-untyped-def]
    g = anisotropic_gaussian(dim=6)
    sig = grids.karras(n, 0.01, 20.0)
    x = g.sample(3, sig[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    return g, sig, x


def test_callback_once_per_interval_with_pre_step_state() -> None:
    g, sig, x = _setup()
    seen: list[gaussport.StepInfo] = []
    sol = gaussport.solve(g, x, sig, "euler", callback=seen.append, disable=True)
    assert [s.i for s in seen] == list(range(len(sig) - 1))
    assert seen[0].x is not None and torch.equal(seen[0].x, x)
    assert all((s.sigma, s.sigma_next) == (sig[s.i], sig[s.i + 1]) for s in seen)
    assert torch.allclose(seen[0].denoised, g(x, torch.full((3,), sig[0], dtype=torch.float64)))
    assert sol.sigmas == sig and sol.teleport is None


def test_resume_from_state_equals_one_run() -> None:
    g, sig, x = _setup(8)
    full = gaussport.solve(g, x, sig, "heun", disable=True)
    first = gaussport.solve(g, x, sig[:4], "heun", disable=True)
    second = gaussport.solve(g, first.x, sig[3:], "heun", state=first.state, disable=True)
    assert torch.allclose(second.x, full.x, rtol=0, atol=1e-14)
    assert first.nfe + second.nfe == full.nfe


def test_grid_of_one_level_is_a_no_op() -> None:
    g, _, x = _setup()
    sol = gaussport.solve(g, x, [5.0], "heun", disable=True)
    assert torch.equal(sol.x, x) and sol.nfe == 0


def test_tensor_grid_on_any_device_and_float32_default_state() -> None:
    g, sig, x = _setup()
    counter = CountingDenoiser(lambda xx, s: g(xx, s))
    dtypes = []
    sol = gaussport.solve(
        lambda xx, s: dtypes.append((xx.dtype, s.dtype)) or counter(xx, s),
        x.float(),
        torch.tensor(sig),
        "euler",
        disable=True,
    )
    assert sol.x.dtype == torch.float32 and set(dtypes) == {(torch.float32, torch.float32)}
    sol64 = gaussport.solve(g, x.float(), sig, "euler", dtype=torch.float64, disable=True)
    assert sol64.x.dtype == torch.float32  # output keeps the input dtype; state was float64
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        gaussport.solve(g, x, sig, "euler", dtype=torch.float16, disable=True)


def test_model_dtype_is_the_only_cast_boundary() -> None:
    g, sig, x = _setup()
    seen = []

    def half_model(xx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        seen.append(xx.dtype)
        return g(xx.double(), s.double()).half()

    sol = gaussport.solve(half_model, x.float(), sig, "heun", model_dtype=torch.float16, disable=True)
    assert set(seen) == {torch.float16} and sol.x.dtype == torch.float32


@pytest.mark.parametrize(
    "make_x, error, match",
    [
        (lambda x: x.clone().fill_(float("nan")), ValueError, "NaN or infinite"),
        (lambda x: x.long(), TypeError, "floating-point"),
        (lambda x: x[0, 0], ValueError, "batch dimension"),
        (lambda x: x.numpy(), TypeError, "torch.Tensor"),
    ],
)
def test_bad_states(make_x, error, match) -> None:  # type: ignore[no-untyped-def]
    g, sig, x = _setup()
    with pytest.raises(error, match=match):
        gaussport.solve(g, make_x(x), sig, disable=True)


def test_bad_denoisers_and_solvers() -> None:
    g, sig, x = _setup()
    with pytest.raises(ValueError, match="returned shape"):
        gaussport.solve(lambda xx, s: xx[:, :2], x, sig, disable=True)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        gaussport.solve(lambda xx, s: xx.numpy(), x, sig, disable=True)
    with pytest.raises(FloatingPointError, match="non-finite"):
        gaussport.solve(lambda xx, s: xx * float("inf"), x, sig, disable=True)
    with pytest.raises(ValueError, match="unknown solver 'rk9'"):
        gaussport.solve(g, x, sig, "rk9", disable=True)
    with pytest.raises(TypeError, match="only be given with a solver name"):
        gaussport.solve(g, x, sig, gaussport.solvers.get("heun"), order=2, disable=True)
    with pytest.raises(TypeError, match="callable"):
        gaussport.solve(42, x, sig, disable=True)  # type: ignore[arg-type]


def test_no_autograd_graph_unless_enabled() -> None:
    g, sig, x = _setup()
    x = x.clone().requires_grad_(True)
    assert not gaussport.solve(g, x, sig, "heun", disable=True).x.requires_grad
    out = gaussport.solve(g, x, sig, "euler", disable=True, enable_grad=True).x
    (grad,) = torch.autograd.grad(out.sum(), x)
    # Euler on an affine denoiser is an affine map of x: its gradient is x-independent and finite.
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    warm = gaussport.sample(g, x, sig, "euler", warm_start=g, sigma_skip=sig[2], disable=True)
    assert not warm.x.requires_grad
