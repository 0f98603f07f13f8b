"""Rectified flow: the VE view, the teleport from pure noise (t = 1), solvers on velocity models."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import schedules
from gaussport.adapters.flow import (
    RectifiedFlowDenoiser,
    sample_rectified_flow,
    step_from_noise,
    teleport_native,
)
from gaussport.analytic import Gaussian
from gaussport.testing import gaussian_of_shape

ve_sigma = schedules.RectifiedFlow().sigma_at


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _closed_form_from_noise(g: Gaussian, z: Tensor, t: float) -> Tensor:
    """The Gaussian flow map in native coordinates (docs/warm-start.md#teleporting-from-pure-noise)
    with alpha_t = 1 - t, sigma_t = t, from s = 1 (alpha = 0, sigma = 1):
    x_t = alpha_t mu + (alpha_t^2 Sigma + t^2 I)^(1/2) x_1, from a dense eigendecomposition."""
    lam, u = torch.linalg.eigh(g.cov.dense())
    a = 1.0 - t
    root = (u * torch.sqrt(a * a * lam.clamp(min=0) + t * t)) @ u.T
    flat = a * g.mean.reshape(-1) + z.reshape(z.shape[0], -1) @ root
    return flat.reshape(z.shape)


def _velocity_model(g: Gaussian) -> RectifiedFlowDenoiser:
    native = schedules.NativeModel(g, schedules.RectifiedFlow(), "flow")

    def model(x_t: Tensor, t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        if bool((t == 1).all()):  # E[eps - x0 | x_1] = x_1 - mu
            return x_t - g.mean.to(x_t)
        return native(x_t, t)

    return RectifiedFlowDenoiser(model)


@pytest.fixture()
def problem() -> tuple[Gaussian, Tensor]:
    g = gaussian_of_shape((3, 2, 2), seed=11, high=1.5)
    z = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return g, z


def test_denoiser_is_exact_for_every_prediction(problem: tuple[Gaussian, Tensor]) -> None:
    g, _ = problem
    rf = schedules.RectifiedFlow()
    x = g.sample(3, 2.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.3, 2.0, 9.0], dtype=torch.float64)
    for prediction in ("flow", "x0", "epsilon"):
        den = RectifiedFlowDenoiser(
            schedules.NativeModel(g, rf, prediction, time_scale=1000.0),
            prediction=prediction,
            time_scale=1000.0,
        )
        assert torch.allclose(den(x, sigma), g(x, sigma), rtol=1e-9, atol=1e-10)


def test_teleport_from_pure_noise_is_the_closed_form(problem: tuple[Gaussian, Tensor]) -> None:
    g, z = problem
    calls = []
    den = _velocity_model(g)
    counted = RectifiedFlowDenoiser(lambda x, t: calls.append(1) or den.model(x, t))
    for t in (0.9, 0.5, 0.1, 0.0):
        calls.clear()
        ts = [1.0, t] + ([0.0] if t > 0 else [])
        sol = sample_rectified_flow(counted, z, ts, "euler", warm_start=g, t_skip=t, disable=True)
        if t == 0.0:
            assert not calls and sol.nfe == 0
            assert torch.allclose(sol.x, _closed_form_from_noise(g, z, 0.0), rtol=1e-11, atol=1e-11)
        assert torch.allclose(
            teleport_native(g, z, 1.0, t), _closed_form_from_noise(g, z, t), rtol=1e-11, atol=1e-11
        )


def test_native_teleport_from_finite_time_matches_integrating_the_ode(
    problem: tuple[Gaussian, Tensor],
) -> None:
    g, z = problem
    x_t = _closed_form_from_noise(g, z, 0.8)
    ref = gaussport.reference_solve(g, x_t / (1 - 0.8), [ve_sigma(0.8), ve_sigma(0.3)], steps_per_unit=400)
    assert torch.allclose(teleport_native(g, x_t, 0.8, 0.3), ref * (1 - 0.3), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_teleport_then_solver_converges_to_the_closed_form(
    problem: tuple[Gaussian, Tensor], solver: str, order: int
) -> None:
    g, z = problem
    den = _velocity_model(g)
    errors = []
    exact = _closed_form_from_noise(g, z, 0.05)
    for n in (16, 32, 64):
        # n solver steps uniform in log(sigma_ve) from t_skip = 0.6 down to t = 0.05 (no final step to 0,
        # whose first-order limit would add an n-independent error).
        sig = torch.exp(
            torch.linspace(math.log(ve_sigma(0.6)), math.log(ve_sigma(0.05)), n + 1, dtype=torch.float64)
        )
        ts = [1.0] + (sig / (1 + sig)).tolist()
        sol = sample_rectified_flow(den, z, ts, solver, warm_start=g, t_skip=ts[1], disable=True)
        errors.append(_rel(sol.x, exact))
        assert sol.nfe == (n if solver == "euler" else 2 * n) and sol.teleport == (1.0, ts[1])
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(abs(r - order) < 0.3 for r in rates), (errors, rates)


def test_start_at_pure_noise_without_warm_start(problem: tuple[Gaussian, Tensor]) -> None:
    g, z = problem
    den = _velocity_model(g)
    exact = _closed_form_from_noise(g, z, 0.0)
    seen: list[Any] = []
    ts = torch.linspace(1.0, 0.0, 9).tolist()
    sol = sample_rectified_flow(den, z, ts, "euler", callback=seen.append, disable=True)
    assert sol.nfe == 8 and [s.i for s in seen] == list(range(8))
    assert seen[0].sigma == 1.0 and torch.equal(seen[0].x, z)
    assert [s.sigma for s in seen] == pytest.approx(ts[:-1])
    errors = [
        _rel(
            sample_rectified_flow(den, z, torch.linspace(1.0, 0.0, n + 1).tolist(), "euler", disable=True).x,
            exact,
        )
        for n in (16, 32, 64)
    ]
    assert errors[0] > errors[1] > errors[2] and math.log2(errors[1] / errors[2]) > 0.8
    # With the warm start at the same number of evaluations the error is smaller.
    tele = sample_rectified_flow(
        den, z, [1.0] + torch.linspace(0.5, 0.0, 17).tolist(), "euler", warm_start=g, t_skip=0.5, disable=True
    )
    assert tele.nfe == 16 and _rel(tele.x, exact) < errors[0]


def test_callbacks_in_native_coordinates(problem: tuple[Gaussian, Tensor]) -> None:
    g, z = problem
    den = _velocity_model(g)
    seen: list[Any] = []
    ts = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    sample_rectified_flow(den, z, ts, "euler", warm_start=g, t_skip=0.5, callback=seen.append, disable=True)
    assert [s.i for s in seen] == [0, 1, 2, 3, 4]
    assert [s.teleported for s in seen] == [True, True, False, False, False]
    assert torch.allclose(seen[1].x, _closed_form_from_noise(g, z, 0.8), rtol=1e-10, atol=1e-10)
    assert seen[2].sigma == pytest.approx(0.5)


def test_bad_input(problem: tuple[Gaussian, Tensor]) -> None:
    g, z = problem
    den = _velocity_model(g)
    with pytest.raises(ValueError, match="go together"):
        sample_rectified_flow(den, z, [1.0, 0.0], t_skip=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_rectified_flow(den, z, [2.0, 0.0])
    with pytest.raises(ValueError, match="fitted to samples of shape"):
        sample_rectified_flow(den, z[:, :2], [1.0, 0.0], warm_start=g, t_skip=0.5)
    with pytest.raises(ValueError, match="VP parameterisation"):
        RectifiedFlowDenoiser(den.model, prediction="v")
    with pytest.raises(ValueError, match="input's shape"):
        RectifiedFlowDenoiser(lambda x, t: x[:, :1])(z, torch.ones(4, dtype=torch.float64))


def test_step_from_noise_is_the_flow_euler_step_from_t_1() -> None:
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rf = schedules.RectifiedFlow()
    for t1 in (0.7, 0.2):
        native = z + (t1 - 1.0) * (z - x0)  # x_1 + (t1 - 1) v with the exact velocity v = eps - x0
        x_ve = step_from_noise(x0, z, rf.sigma_at(t1))
        assert torch.allclose(x_ve * rf.alpha_at(rf.sigma_at(t1)), native, rtol=1e-13, atol=1e-13)
    assert step_from_noise(x0, z, 0.0) is x0


def test_a_diffusers_transformer_is_taken_as_it_is(diffusers_pkg: Any) -> None:
    # SD3Transformer2DModel.forward(hidden_states, encoder_hidden_states, pooled_projections, timestep):
    # its second positional parameter is the prompt, so the time goes by keyword (docs/adapters.md example).
    from gaussport.testing.diffusers import text_free_sd3_pipeline, tiny_sd3_transformer, tiny_vae

    transformer = tiny_sd3_transformer()
    pe = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    pooled = torch.randn(2, 64, generator=torch.Generator().manual_seed(2))
    den = RectifiedFlowDenoiser(
        transformer, time_scale=1000.0, encoder_hidden_states=pe, pooled_projections=pooled
    )
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        v = transformer(
            hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=pe, pooled_projections=pooled
        ).sample
        assert torch.allclose(den.native(x_t, t), x_t - t[:, None, None, None] * v, atol=1e-6)
        # A whole run: sample_rectified_flow's Euler is the SD3 pipeline's with FlowMatch Euler.
        scheduler = diffusers_pkg.FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipe = text_free_sd3_pipeline(transformer, tiny_vae(), scheduler)
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
        theirs = pipe(
            prompt_embeds=pe,
            pooled_prompt_embeds=pooled,
            latents=z.clone(),
            num_inference_steps=6,
            height=16,
            width=16,
            guidance_scale=1.0,
            output_type="latent",
        ).images
        ours = sample_rectified_flow(den, z, scheduler.sigmas.tolist(), "euler", disable=True).x
    assert _rel(ours, theirs) < 1e-4
