"""GaussianMixture: exact denoiser (Tweedie), moments, sampling."""

from __future__ import annotations

import pytest
import torch

from gaussport.analytic import Gaussian, GaussianMixture, anisotropic_mixture
from gaussport.testing import random_gaussian


def test_denoiser_is_tweedie_of_log_prob() -> None:
    mix = anisotropic_mixture(dim=5, n_components=3, seed=0)
    for s in (0.05, 0.5, 5.0):
        x = mix.sample(6, s, torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(mix.log_prob(x, s).sum(), x)
        d = mix(x.detach(), torch.full((6,), s, dtype=torch.float64))
        assert torch.allclose(d, x.detach() + s**2 * grad, rtol=1e-9, atol=1e-12)


def test_single_component_is_the_gaussian() -> None:
    g = random_gaussian([1.0, 0.3, 0.05], seed=2)
    mix = GaussianMixture([g])
    x = g.sample(4, 1.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.full((4,), 1.0, dtype=torch.float64)
    assert torch.allclose(mix(x, s), g(x, s), rtol=1e-12)


def test_moments_match_a_hand_computed_two_point_mixture() -> None:
    # 1-D: 0.25 N(-1, 0.1) + 0.75 N(2, 0.4): mean = -0.25 + 1.5 = 1.25,
    # E x^2 = 0.25 (0.1 + 1) + 0.75 (0.4 + 4) = 3.575, var = 3.575 - 1.25^2 = 2.0125.
    a = Gaussian(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([[0.1]], dtype=torch.float64))
    b = Gaussian(torch.tensor([2.0], dtype=torch.float64), torch.tensor([[0.4]], dtype=torch.float64))
    m = GaussianMixture([a, b], [1.0, 3.0]).moments()
    assert float(m.mean) == pytest.approx(1.25, rel=1e-14)
    assert float(m.cov.dense()) == pytest.approx(2.0125, rel=1e-14)


def test_sample_matches_moments_and_uses_only_the_generator() -> None:
    mix = anisotropic_mixture(dim=3, n_components=2, seed=4)
    before = torch.get_rng_state()
    x = mix.sample(200_000, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(before, torch.get_rng_state())
    m = mix.moments()
    assert torch.allclose(x.mean(0), m.mean, atol=0.01)
    assert torch.allclose(torch.cov(x.T), m.cov.dense(), atol=0.01)


def test_bad_mixtures() -> None:
    g = random_gaussian([1.0, 0.5], seed=0)
    with pytest.raises(ValueError, match="at least one"):
        GaussianMixture([])
    with pytest.raises(ValueError, match="sample shape"):
        GaussianMixture([g, random_gaussian([1.0], seed=0)])
    with pytest.raises(ValueError, match="positive finite"):
        GaussianMixture([g, g], [1.0, -1.0])


@pytest.mark.parametrize("rank", [None, 3])
def test_stacked_evaluation_equals_per_component_evaluation(rank: int | None) -> None:
    # The batched path (all components stacked) against the loop over Gaussian components.
    mix = anisotropic_mixture(dim=12, n_components=4, rank=rank, seed=5)
    loop = GaussianMixture(
        list(mix.components) + [random_gaussian([1.0] * 12, seed=0, representation="diagonal")],
        list(mix.weights) + [1e-300],
    )  # a Diagonal component disables stacking
    assert mix._stacked is not None and loop._stacked is None
    for s in (0.01, 0.4, 7.0):
        x = mix.sample(5, s, torch.Generator().manual_seed(2), dtype=torch.float64)
        sig = torch.full((5,), s, dtype=torch.float64)
        assert torch.allclose(mix(x, sig), loop(x, sig), rtol=1e-11, atol=1e-13)
