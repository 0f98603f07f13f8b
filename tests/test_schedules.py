"""Noise schedules and prediction conversions: round trips and exactness on a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaussport import schedules
from gaussport.testing import random_gaussian

SCHEDULES = [
    schedules.VE(),
    schedules.VPDiscrete.from_betas(0.00085, 0.012, 1000, "scaled_linear"),
    schedules.VPDiscrete.from_betas(),
    schedules.VPLinear(),
    schedules.VPCosine(),
    schedules.RectifiedFlow(),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@given(u=st.floats(0.0, 1.0))
def test_sigma_t_round_trip(schedule: schedules.NoiseSchedule, u: float) -> None:
    lo, hi = schedule.sigma_min, min(schedule.sigma_max, 1e3)
    lo = max(lo, 1e-3)
    sigma = torch.tensor([math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))], dtype=torch.float64)
    t = schedule.t_of_sigma(sigma)
    assert torch.allclose(schedule.sigma_of_t(t), sigma, rtol=1e-9)
    alpha, s = schedule.alpha_sigma(t)
    assert torch.allclose(s / alpha, sigma, rtol=1e-9)
    if not isinstance(schedule, (schedules.VE, schedules.RectifiedFlow)):
        assert torch.allclose(alpha**2 + s**2, torch.ones_like(alpha), rtol=1e-12)  # variance preserving


def test_vp_discrete_matches_k_diffusion_interpolation() -> None:
    ext = pytest.importorskip("k_diffusion.external")
    sch = schedules.VPDiscrete.from_betas(0.00085, 0.012, 1000, "scaled_linear")
    theirs = ext.DiscreteSchedule(((1 - sch.alphas_cumprod) / sch.alphas_cumprod) ** 0.5, quantize=False)
    sigma = torch.tensor([0.03, 0.5, 1.0, 7.3, 14.0], dtype=torch.float64)
    assert torch.allclose(sch.t_of_sigma(sigma), theirs.sigma_to_t(sigma).double(), rtol=1e-9, atol=1e-9)
    t = torch.tensor([0.0, 10.5, 500.25, 999.0], dtype=torch.float64)
    assert torch.allclose(sch.sigma_of_t(t), theirs.t_to_sigma(t).double(), rtol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0", "flow"])
def test_native_model_round_trip_recovers_the_gaussian(
    schedule: schedules.NoiseSchedule, prediction: str
) -> None:
    if prediction == "flow" and not isinstance(schedule, (schedules.VE, schedules.RectifiedFlow)):
        with pytest.raises(NotImplementedError):
            schedule.derivatives(torch.zeros(1))
        return
    g = random_gaussian([2.0, 0.5, 0.05], seed=1)
    model = schedules.NativeModel(g, schedule, prediction)
    denoiser = schedules.ScheduledDenoiser(model, schedule, prediction)
    sigma = torch.tensor([0.05, 0.8, 6.0], dtype=torch.float64)
    x = g.mean + torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    assert torch.allclose(denoiser(x, sigma), g(x, sigma), rtol=1e-9, atol=1e-12)


def test_epsilon_prediction_is_the_noise() -> None:
    # An independent derivation: for x_t = alpha x0 + sigma eps the exact epsilon-model returns eps.
    sch = schedules.VPLinear()
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    alpha, sigma = sch.alpha_sigma(t)
    x0 = torch.randn(2, 4, dtype=torch.float64)
    eps = torch.randn(2, 4, dtype=torch.float64)
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    assert torch.allclose(schedules.from_denoised(sch, x0, x_t, t, "epsilon"), eps, rtol=1e-12)
    assert torch.allclose(schedules.to_denoised(sch, eps, x_t, t, "eps"), x0, rtol=1e-10)
    v = alpha[:, None] * eps - sigma[:, None] * x0
    assert torch.allclose(schedules.to_denoised(sch, v, x_t, t, "v_prediction"), x0, rtol=1e-10)
    rf = schedules.RectifiedFlow()
    xr = (1 - t[:, None]) * x0 + t[:, None] * eps
    assert torch.allclose(schedules.to_denoised(rf, eps - x0, xr, t, "flow_prediction"), x0, rtol=1e-10)
    with pytest.raises(ValueError, match="unsupported prediction"):
        schedules.to_denoised(sch, eps, x_t, t, "score")


def test_quantized_timesteps_keep_exact_scaling_like_k_diffusion() -> None:
    ext = pytest.importorskip("k_diffusion.external")
    sch = schedules.VPDiscrete.from_betas(0.00085, 0.012, 1000, "scaled_linear", quantize=True)

    def eps_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # any smooth function of (x_t, t)
        return torch.tanh(x_t) * (1 + t[:, None] / 1000)

    theirs = ext.DiscreteEpsDDPMDenoiser(eps_model, sch.alphas_cumprod, quantize=True)
    ours = schedules.ScheduledDenoiser(eps_model, sch, "epsilon")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    sigma = torch.tensor([0.05, 0.7, 3.3, 12.0], dtype=torch.float64)
    t_q = sch.model_time(sigma)
    assert torch.equal(t_q, t_q.round())  # integer training indexes
    # k-diffusion's formula: the true sigma scales the input and the output, the index only the model.
    expected = x - sigma[:, None] * eps_model(x / torch.sqrt(1 + sigma[:, None] ** 2), t_q)
    assert torch.allclose(ours(x, sigma), expected, rtol=1e-13, atol=1e-13)
    assert torch.allclose(
        ours(x, sigma), theirs(x, sigma).double(), rtol=1e-6, atol=1e-6
    )  # k-diffusion: ~1e-7
    assert torch.allclose(sch.sigma_of_t(sch.t_of_sigma(sigma)), sigma, rtol=1e-9)  # conversions stay exact


# ------------------------------------------------------------------ Python-float conversions (grids)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@given(u=st.floats(0.0, 1.0))
def test_float_conversions_agree_with_the_tensor_ones_and_round_trip(
    schedule: schedules.NoiseSchedule, u: float
) -> None:
    lo, hi = max(schedule.sigma_min, 1e-3), min(schedule.sigma_max, 1e3)
    sigma = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    s64 = torch.tensor([sigma], dtype=torch.float64)
    t = schedule.t_at(sigma)
    assert isinstance(t, float) and t == pytest.approx(float(schedule.t_of_sigma(s64)), rel=1e-15, abs=0)
    assert schedule.sigma_at(t) == pytest.approx(sigma, rel=1e-9)
    assert schedule.sigma_at(t) == pytest.approx(
        float(schedule.sigma_of_t(torch.tensor([t], dtype=torch.float64))), rel=1e-15
    )
    alpha = schedule.alpha_at(sigma)
    assert isinstance(alpha, float)
    assert alpha == pytest.approx(float(schedule.alpha_of_sigma(s64)), rel=1e-14)
    assert alpha == pytest.approx(float(schedule.alpha_sigma(schedule.t_of_sigma(s64))[0]), rel=1e-9)
    x_ve = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    assert torch.allclose(schedule.to_native(x_ve, s64)[0], alpha * x_ve, rtol=1e-9)


def test_float_conversions_known_values() -> None:
    rf = schedules.RectifiedFlow()
    assert rf.sigma_at(0.5) == 1.0 and rf.t_at(1.0) == 0.5 and rf.alpha_at(1.0) == 0.5
    assert rf.sigma_at(0.0) == 0.0 and rf.t_at(0.0) == 0.0 and rf.alpha_at(0.0) == 1.0
    assert rf.sigma_at(0.75) == 3.0 and rf.t_at(3.0) == 0.75 and rf.alpha_at(3.0) == 0.25
    # Pure noise: t = 1 is sigma = inf, where the native state carries no data (alpha = 0).
    assert rf.sigma_at(1.0) == math.inf and rf.t_at(math.inf) == 1.0 and rf.alpha_at(math.inf) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
            rf.sigma_at(bad)
    ve = schedules.VE()
    assert (ve.t_at(2.5), ve.sigma_at(2.5), ve.alpha_at(2.5)) == (2.5, 2.5, 1.0)
    for vp in SCHEDULES[1:5]:  # alpha^2 + sigma^2 = 1: alpha = 1 / sqrt(1 + sigma_ve^2)
        assert vp.alpha_at(0.0) == 1.0 and vp.alpha_at(math.sqrt(3.0)) == pytest.approx(0.5, rel=1e-15)
    ddpm = schedules.VPDiscrete.from_betas()
    assert ddpm.sigma_at(0.0) == pytest.approx(ddpm.sigma_min, rel=1e-15)
    assert ddpm.sigma_at(999.0) == pytest.approx(ddpm.sigma_max, rel=1e-15)
    assert ddpm.t_at(ddpm.sigma_max) == pytest.approx(999.0, rel=1e-12)
    assert ddpm.t_at(ddpm.sigma_at(500.25)) == pytest.approx(500.25, rel=1e-12)
