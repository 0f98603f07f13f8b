"""The training losses: EDM's loss against a hand computation with the same draws; the gated bootstrap
target unbiased on a Gaussian mixture with an exact teacher (Monte Carlo, 5 standard errors computed
from the samples), exactly the Gaussian denoiser on Gaussian data with an exact Gaussian teacher (zero
variance), ``mix=0`` equal to the DSM loss, no gradient through the teacher, autocast in float16 and
bfloat16, and the analytic Gaussian refused as teacher.

The "exact Gaussian teacher" of the zero-variance test is a plain function that returns the Gaussian's
denoiser, so the test exercises the target formula; passing the Gaussian object itself is refused (that
is the misuse the refusal is for: the target collapses onto the Gaussian, docs/training.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gaussport.analytic import Dense, Gaussian, GaussianMixture, LowRankPlusIsotropic
from gaussport.training import (
    GaussianResidualDenoiser,
    bootstrapped_dsm_loss,
    edm_loss,
    gated_bootstrap_target,
)

DIM = 8
LEVELS = (0.2, 0.35, 0.6, 1.0, 1.7, 3.0)


def _mixture() -> GaussianMixture:
    """Three well separated components of different shapes in d = 8 (strongly non-Gaussian at sigma ~ 1)."""
    gen = torch.Generator().manual_seed(0)
    comps = []
    for k in range(3):
        mean = 2.0 * torch.randn(DIM, generator=gen, dtype=torch.float64)
        a = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
        cov = 0.1 * (k + 1) * (a @ a.T / DIM) + 0.02 * torch.eye(DIM, dtype=torch.float64)
        comps.append(Gaussian(mean, cov))
    return GaussianMixture(comps, [0.5, 0.3, 0.2])


def _gaussian(representation: str) -> Gaussian:
    g = _mixture().moments()
    if representation == "dense":
        return g
    if representation == "diagonal":
        return Gaussian.diagonal(g.mean, torch.diagonal(g.cov.dense()))
    assert isinstance(g.cov, Dense)
    return Gaussian(g.mean, LowRankPlusIsotropic.from_dense(g.cov, 3))


class _Net(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.a = nn.Linear(DIM + 1, 32, dtype=dtype)
        self.b = nn.Linear(32, DIM, dtype=dtype)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        h = torch.cat([x, c_noise[:, None].to(x.dtype)], dim=1)
        return self.b(torch.tanh(self.a(h)))


def _model(dtype: torch.dtype = torch.float64, seed: int = 0) -> GaussianResidualDenoiser:
    torch.manual_seed(seed)
    return GaussianResidualDenoiser(_Net(dtype), _gaussian("dense"))


def _data(n: int = 16, seed: int = 1) -> Tensor:
    return _mixture().sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- EDM loss
def test_edm_loss_matches_a_hand_computation_with_the_same_draws() -> None:
    model, x0 = _model(), _data()
    loss, per_sample = edm_loss(model, x0, generator=torch.Generator().manual_seed(7), per_sample=True)
    gen = torch.Generator().manual_seed(7)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(16, generator=gen, dtype=torch.float64))
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    weight = (sigma**2 + 0.25) / (sigma**2 * 0.25)
    expected = weight * (model(x0 + sigma[:, None] * eps, sigma) - x0).square().mean(1)
    torch.testing.assert_close(per_sample, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-14, atol=0)


def test_edm_loss_weightings_and_explicit_sigma() -> None:
    model, x0 = _model(), _data()
    sigma = torch.linspace(0.01, 20.0, 16, dtype=torch.float64)

    def run(weighting) -> Tensor:  # type: ignore[no-untyped-def]
        return edm_loss(
            model,
            x0,
            generator=torch.Generator().manual_seed(3),
            sigma=sigma,
            weighting=weighting,
            per_sample=True,
        )[1]

    unit = run(lambda s: torch.ones_like(s))
    torch.testing.assert_close(run("denoiser"), unit * model.loss_weight(sigma), rtol=1e-13, atol=0)
    torch.testing.assert_close(run("auto"), run("denoiser"), rtol=0, atol=0)
    torch.testing.assert_close(run("edm"), unit * (sigma**2 + 0.25) / (sigma**2 * 0.25), rtol=1e-13, atol=0)
    # A plain function has no loss_weight: "auto" falls back to EDM's weighting.
    plain = lambda x, s: model(x, s)  # noqa: E731
    auto = edm_loss(plain, x0, generator=torch.Generator().manual_seed(3), sigma=sigma, weighting="auto")
    torch.testing.assert_close(auto, run("edm").mean(), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------- the target
@pytest.mark.parametrize("representation", ["dense", "diagonal", "lowrank"])
def test_gaussian_data_with_an_exact_gaussian_teacher_give_the_gaussian_denoiser(representation: str) -> None:
    """Zero variance: the target is a function of x_t alone, D_G(x_t), whatever x_s was."""
    g = _gaussian(representation)
    n = 64
    gen = torch.Generator().manual_seed(11)
    x0 = g.sample(n, generator=gen, dtype=torch.float64)
    sigma_s = torch.full((n,), 0.6, dtype=torch.float64)
    sigma_t = torch.full((n,), 1.1, dtype=torch.float64)
    x_s = x0 + 0.6 * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x_t = x_s + math.sqrt(1.1**2 - 0.6**2) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    exact_teacher = lambda x, s: g(x, s)  # noqa: E731 - a wrapped exact score: the formula is exercised
    target = gated_bootstrap_target(exact_teacher, g, x_s, sigma_s, x_t, sigma_t)
    torch.testing.assert_close(target, g(x_t, sigma_t), rtol=0, atol=1e-12)
    # The DSM target x0 and a teacher off by a constant do vary (the check above can fail).
    shifted = gated_bootstrap_target(lambda x, s: g(x, s) + 0.1, g, x_s, sigma_s, x_t, sigma_t)
    assert float((shifted - g(x_t, sigma_t)).abs().max()) > 1e-3


def _bias_statistics(target: Tensor, truth: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
    """Means and standard errors of ``e_j`` and of ``e . probe``, ``e = target - truth`` (per sample)."""
    e = target - truth
    stats = torch.cat([e, (e * probe).sum(1, keepdim=True)], dim=1)  # [n, d + 1]
    n = stats.shape[0]
    return stats.mean(0), stats.std(0) / math.sqrt(n)


def test_gated_target_is_unbiased_on_a_mixture_with_an_exact_teacher() -> None:
    """E[T - D(x_t) | x_t] = 0: every mean of (T - D) and of (T - D) . h(x_t) within 5 standard errors.

    h = D(x_t) - D_G(x_t), the non-Gaussian part of the denoiser: the Gaussian teacher's target is
    biased exactly along it, and the same statistic flags it (the check has power).
    """
    mixture = _mixture()
    g = mixture.moments()
    n = 20_000
    gen = torch.Generator().manual_seed(13)
    exact_teacher = lambda x, s: mixture(x, s)  # noqa: E731
    gaussian_teacher = lambda x, s: g(x, s)  # noqa: E731
    for low, high, fine in ((0.35, 0.6, False), (1.0, 1.7, False), (1.0, 1.1, True), (2.2, 2.4, True)):
        x0 = mixture.sample(n, generator=gen, dtype=torch.float64)
        sigma_s = torch.full((n,), low, dtype=torch.float64)
        sigma_t = torch.full((n,), high, dtype=torch.float64)
        x_s = x0 + low * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        x_t = x_s + math.sqrt(high**2 - low**2) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        truth = mixture(x_t, sigma_t)
        probe = truth - g(x_t, sigma_t)
        target = gated_bootstrap_target(exact_teacher, g, x_s, sigma_s, x_t, sigma_t)
        mean, se = _bias_statistics(target, truth, probe)
        assert bool((mean.abs() < 5 * se).all()), (low, high, (mean / se).tolist())
        if fine:  # on a fine grid (sigma_t / sigma_s <= 1.1) the target varies less than DSM's (x0)
            assert float((target - truth).square().mean()) < 0.5 * float((x0 - truth).square().mean())
        biased = gated_bootstrap_target(gaussian_teacher, g, x_s, sigma_s, x_t, sigma_t)
        mean, se = _bias_statistics(biased, truth, probe)
        assert float(mean[-1].abs() / se[-1]) > 20, (low, high, float(mean[-1] / se[-1]))


# ---------------------------------------------------------------------------------------------- the loss
def _draws(x0: Tensor, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The documented draw order of bootstrapped_dsm_loss: k, eps1, eps2."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.tensor(LEVELS, dtype=torch.float64)
    k = torch.randint(1, len(LEVELS), (x0.shape[0],), generator=gen)
    eps1 = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    eps2 = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    sigma_s, sigma_t = grid[k - 1], grid[k]
    x_s = x0 + sigma_s[:, None] * eps1
    x_t = x_s + (sigma_t**2 - sigma_s**2).sqrt()[:, None] * eps2
    return sigma_s, sigma_t, x_s, x_t, k


def test_mix_zero_is_the_dsm_loss_exactly() -> None:
    model, x0 = _model(), _data(32)
    teacher = _model(seed=1)
    loss, per_sample = bootstrapped_dsm_loss(
        model, x0, teacher=teacher, gaussian=model.gaussian, levels=LEVELS, mix=0.0,
        generator=torch.Generator().manual_seed(5), per_sample=True,
    )  # fmt: skip
    _, sigma_t, _, x_t, _ = _draws(x0, 5)
    expected = model.loss_weight(sigma_t) * (model(x_t, sigma_t) - x0).square().mean(1)
    torch.testing.assert_close(per_sample, expected, rtol=0, atol=0)
    torch.testing.assert_close(loss, expected.mean(), rtol=0, atol=0)


def test_blended_loss_matches_its_definition_and_no_gradient_reaches_the_teacher() -> None:
    model, x0 = _model(), _data(32)
    teacher = _model(seed=1)
    mix, burn = 0.5, 0.5
    loss = bootstrapped_dsm_loss(
        model, x0, teacher=teacher, gaussian=model.gaussian, levels=LEVELS, mix=mix, sigma_burn=burn,
        generator=torch.Generator().manual_seed(9), weighting="edm",
    )  # fmt: skip
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    sigma_s, sigma_t, x_s, x_t, _ = _draws(x0, 9)
    above = sigma_t > burn
    assert 0 < int(above.sum()) < x0.shape[0]  # both branches are exercised
    boot = gated_bootstrap_target(teacher, model.gaussian, x_s, sigma_s, x_t, sigma_t)
    target = torch.where(above[:, None], (1 - mix) * x0 + mix * boot, x0).detach()
    weight = (sigma_t**2 + 0.25) / (sigma_t**2 * 0.25)
    expected = (weight * (model(x_t, sigma_t) - target).square().mean(1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-13, atol=0)
    expected.backward()
    for a, b in zip(got, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)

    # The model as its own teacher: still no gradient through the target (evaluated under no_grad).
    model.zero_grad()
    own = bootstrapped_dsm_loss(
        model, x0, teacher=model, gaussian=model.gaussian, levels=LEVELS, mix=1.0, sigma_burn=0.0,
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    own.backward()
    with torch.no_grad():
        frozen = gated_bootstrap_target(model, model.gaussian, x_s, sigma_s, x_t, sigma_t)
    model.zero_grad()
    manual = (model.loss_weight(sigma_t) * (model(x_t, sigma_t) - frozen).square().mean(1)).mean()
    torch.testing.assert_close(own, manual, rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_are_finite_and_differentiable_under_autocast(dtype: torch.dtype) -> None:
    model = _model(torch.float32)
    teacher = _model(torch.float32, seed=1)
    x0 = _data(32).float()
    with torch.autocast("cpu", dtype=dtype):
        losses = [
            edm_loss(model, x0, generator=torch.Generator().manual_seed(0), weighting="denoiser"),
            bootstrapped_dsm_loss(
                model, x0, teacher=teacher, gaussian=model.gaussian, levels=LEVELS,
                generator=torch.Generator().manual_seed(0),
            ),
        ]  # fmt: skip
    for loss in losses:
        assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))
        model.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert any(float(g.abs().max()) > 0 for g in grads if g is not None)


def test_the_analytic_gaussian_is_refused_as_teacher() -> None:
    model, x0 = _model(), _data()
    g = model.gaussian
    for teacher in (g, g.__call__, GaussianMixture([g])):
        with pytest.raises(ValueError, match="teacher"):
            bootstrapped_dsm_loss(model, x0, teacher=teacher, gaussian=g, levels=LEVELS)
