"""Tests of gaussport.metrics: the Frechet distance and the trajectory error (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gaussport
from gaussport.analytic import Gaussian
from gaussport.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_over_seeds,
    trajectory_error,
)


def _random_spd(d: int, gen: torch.Generator, low: float = 0.05, high: float = 2.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    log_lam = torch.empty(d, dtype=torch.float64).uniform_(math.log(low), math.log(high), generator=gen)
    lam = torch.exp(log_lam)
    return (q * lam) @ q.T


# ---------------------------------------------------------------------- Frechet distance
def test_frechet_distance_of_a_set_to_itself_is_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 12, generator=gen, dtype=torch.float64) @ torch.randn(
        12, 12, generator=gen, dtype=torch.float64
    )
    scale = float(torch.trace(feature_statistics(feats)[1]))
    # Exactly 0 in exact arithmetic; the eigh round-off of tr(S) ~ scale is ~1e-13 * scale.
    assert frechet_distance(feats, feats) <= 1e-10 * scale


def test_frechet_distance_grows_monotonically_with_added_noise() -> None:
    gen = torch.Generator().manual_seed(1)
    std = torch.linspace(0.2, 2.0, 8, dtype=torch.float64)
    feats = torch.randn(2000, 8, generator=gen, dtype=torch.float64) * std
    noise = torch.randn(2000, 8, generator=gen, dtype=torch.float64)
    scales = [0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0]
    values = [frechet_distance(feats, feats + t * noise) for t in scales]
    assert values[0] <= 1e-10
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    # Population value for independent N(0, t^2 I) noise on N(0, diag(lam)):
    # sum_i (sqrt(lam_i + t^2) - sqrt(lam_i))^2 (commuting covariances); at t = 4 sampling error is small.
    lam = std**2
    expected = float(((lam + 16.0).sqrt() - lam.sqrt()).square().sum())
    assert values[-1] == pytest.approx(expected, rel=0.1)


def test_frechet_distance_closed_form_commuting_gaussians() -> None:
    # For commuting covariances (S_a^1/2 S_b S_a^1/2)^1/2 = S_a^1/2 S_b^1/2, so in their common
    # eigenbasis d^2 = |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    gen = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    a = torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1, 1e-3], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 0.5, 0.4, 1e-2, 3e-4], dtype=torch.float64)
    mu_a = torch.randn(6, generator=gen, dtype=torch.float64)
    mu_b = torch.randn(6, generator=gen, dtype=torch.float64)
    expected = float((mu_a - mu_b).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    got = frechet_distance((mu_a, (q * a) @ q.T), (mu_b, (q * b) @ q.T))
    assert got == pytest.approx(expected, rel=1e-10)
    # A singular S_b: building (q * b) @ q.T perturbs its zero eigenvalue by ~eps * |S| ~ 1e-16, and
    # the square root turns that into ~1e-8 (sqrt is not Lipschitz at 0; scipy's sqrtm shares this).
    b[-1] = 0.0
    expected = float((mu_a - mu_b).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    got = frechet_distance((mu_a, (q * a) @ q.T), (mu_b, (q * b) @ q.T))
    assert got == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_closed_form_2x2_non_commuting() -> None:
    # For a 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) (the eigenvalues' square roots sum
    # to that); with M = S_a^1/2 S_b S_a^1/2: tr M = tr(S_a S_b), det M = det S_a det S_b.
    s_a = torch.tensor([[2.0, 0.7], [0.7, 0.5]], dtype=torch.float64)
    s_b = torch.tensor([[0.3, -0.2], [-0.2, 1.5]], dtype=torch.float64)
    mu_a = torch.tensor([0.1, -0.4], dtype=torch.float64)
    mu_b = torch.tensor([1.0, 0.3], dtype=torch.float64)
    det = float(torch.det(s_a) * torch.det(s_b))
    tr_cross = math.sqrt(float(torch.trace(s_a @ s_b)) + 2 * math.sqrt(det))
    expected = float((mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b)) - 2 * tr_cross
    assert frechet_distance((mu_a, s_a), (mu_b, s_b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    gen = torch.Generator().manual_seed(3)
    s_a, s_b = _random_spd(16, gen), _random_spd(16, gen)
    mu_a = torch.randn(16, generator=gen, dtype=torch.float64)
    mu_b = torch.randn(16, generator=gen, dtype=torch.float64)
    # The usual FID code path: tr sqrtm(S_a S_b) (a non-symmetric square root; same trace).
    cross = np.real(np.trace(linalg.sqrtm(s_a.numpy() @ s_b.numpy())))
    expected = float((mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b)) - 2 * cross
    assert frechet_distance((mu_a, s_a), (mu_b, s_b)) == pytest.approx(expected, rel=1e-9)


def test_feature_statistics_match_numpy() -> None:
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    mu, cov = feature_statistics(feats)
    np.testing.assert_allclose(mu.numpy(), feats.numpy().mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(cov.numpy(), np.cov(feats.numpy(), rowvar=False), rtol=1e-12, atol=1e-15)
    # Features and their statistics give the same distance.
    other = feats + 0.3
    from_stats = frechet_distance((mu, cov), feature_statistics(other))
    assert frechet_distance(feats, other) == pytest.approx(from_stats)


def test_frechet_distance_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(torch.randn(1, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64))


def test_frechet_over_seeds_reports_mean_and_sample_std() -> None:
    target = torch.zeros(200, 3, dtype=torch.float64)
    target[:, 0] = torch.linspace(-1, 1, 200, dtype=torch.float64)

    def generate(gen: torch.Generator) -> torch.Tensor:
        return torch.randn(200, 3, generator=gen, dtype=torch.float64)

    summary = frechet_over_seeds(generate, seeds=[0, 1, 2], metric=lambda f: frechet_distance(f, target))
    values = [frechet_distance(generate(torch.Generator().manual_seed(s)), target) for s in (0, 1, 2)]
    assert summary.values == pytest.approx(values, rel=0, abs=0)
    assert summary.mean == pytest.approx(float(np.mean(values)))
    assert summary.std == pytest.approx(float(np.std(values, ddof=1)))
    assert len(set(values)) == 3  # different seeds, different samples


# ---------------------------------------------------------------------- trajectory error
def _gaussian(d: int = 8) -> Gaussian:
    gen = torch.Generator().manual_seed(5)
    return Gaussian(0.3 * torch.randn(d, generator=gen, dtype=torch.float64), _random_spd(d, gen, 1e-3, 0.5))


def test_trajectory_error_of_reference_to_itself_is_zero() -> None:
    g = _gaussian()
    x_t = 80.0 * torch.randn(16, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    sigmas = gaussport.grids.karras(6, 0.002, 80.0)
    ref = gaussport.reference_solve(g, x_t, sigmas, steps_per_unit=20)
    again = gaussport.reference_solve(g, x_t.clone(), sigmas, steps_per_unit=20)  # deterministic
    err = trajectory_error(again, ref)
    assert err.per_sample.shape == (16,)
    assert err.mean == 0.0 and err.rms == 0.0 and err.max == 0.0


def test_trajectory_error_of_perturbed_copy_equals_perturbation() -> None:
    gen = torch.Generator().manual_seed(7)
    ref = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    shifts = torch.tensor([0.0, 1e-3, 0.1, -0.5, 2.0], dtype=torch.float64)
    # A constant shift c of every coordinate has per-sample RMS |c|.
    err = trajectory_error(ref + shifts[:, None, None], ref)
    torch.testing.assert_close(err.per_sample, shifts.abs(), rtol=1e-12, atol=1e-15)
    assert err.mean == pytest.approx(float(shifts.abs().mean()))
    assert err.rms == pytest.approx(math.sqrt(float(shifts.square().mean())))
    assert err.max == pytest.approx(2.0)
    # A general perturbation: per-sample sqrt(mean(delta^2)) computed independently in NumPy.
    delta = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    expected = np.sqrt((delta.numpy().reshape(5, -1) ** 2).mean(axis=1))
    np.testing.assert_allclose(trajectory_error(ref + delta, ref).per_sample.numpy(), expected, rtol=1e-12)
    # float32 samples are compared in float64.
    assert trajectory_error((ref + delta).float(), ref).per_sample.dtype == torch.float64


def test_trajectory_error_measures_solver_error_against_the_exact_flow() -> None:
    # For a Gaussian the exact endpoint is the closed-form flow; the reference solve must agree with
    # it far below the solver error it is used to measure, so the metric isolates solver error.
    g = _gaussian()
    x_t = 80.0 * torch.randn(32, 8, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    sigmas = gaussport.grids.karras(8, 0.05, 80.0, append_zero=False)
    exact = g.flow(x_t, 80.0, 0.05)
    ref = gaussport.reference_solve(g, x_t, sigmas, steps_per_unit=40)
    heun = gaussport.solve(g, x_t, sigmas, "heun", disable=True).x
    solver_err = trajectory_error(heun, ref)
    ref_err = trajectory_error(ref, exact).max
    assert ref_err < 1e-7
    assert solver_err.mean > 1e3 * ref_err
    assert solver_err.mean == pytest.approx(trajectory_error(heun, exact).mean, rel=1e-6)


def test_trajectory_error_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        trajectory_error(torch.zeros(2, 3), torch.zeros(3, 3))
