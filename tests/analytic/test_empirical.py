"""EmpiricalMixture: the exact memorising denoiser, checked against a direct softmax over the points."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaussport.analytic import EmpiricalMixture

DATA = torch.randn(23, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def direct_denoiser(data: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """softmax_i(-|x - x_i|^2 / (2 sigma^2)) x_i with explicit differences (no matmul expansion)."""
    pts = data.reshape(data.shape[0], -1)
    diff = x.reshape(x.shape[0], 1, -1) - pts[None]  # [B, N, d]
    w = torch.softmax(-(diff**2).sum(-1) / (2 * sigma[:, None] ** 2), dim=-1)
    return (w @ pts).reshape(x.shape)


@given(
    chunk=st.integers(1, 30),
    log_sigma=st.floats(math.log(0.05), math.log(50.0)),
    seed=st.integers(0, 2**16),
)
def test_chunked_denoiser_matches_the_direct_softmax(chunk: int, log_sigma: float, seed: int) -> None:
    x = 1.5 * torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    sigma = torch.exp(log_sigma + torch.linspace(-1.0, 1.0, 5, dtype=torch.float64))  # a batch of levels
    got = EmpiricalMixture(DATA, chunk_size=chunk)(x, sigma)
    assert torch.allclose(got, direct_denoiser(DATA, x, sigma), rtol=1e-10, atol=1e-12)


def test_small_sigma_gives_the_nearest_training_point() -> None:
    mix = EmpiricalMixture(DATA, chunk_size=4)
    # Near (not at) training points 3, 7 and 20, and a far point; the nearest found by brute force.
    x = torch.stack(
        [DATA[3] + 0.05, DATA[7] - 0.02, DATA[20] * 1.01, 10 * torch.ones(2, 3, dtype=torch.float64)]
    )
    nearest = DATA[((x.reshape(4, 1, -1) - DATA.reshape(1, 23, -1)) ** 2).sum(-1).argmin(-1)]
    for sigma in (1e-2, 1e-4, 1e-8):
        out = mix(x, sigma)
        assert bool(torch.isfinite(out).all())
        assert torch.allclose(out, nearest, rtol=0, atol=1e-12)
    assert torch.equal(mix(x, 0.0), nearest)
    assert torch.equal(mix.nearest(x), nearest)
    mixed = mix(x, torch.tensor([0.0, 1.0, 0.0, 1e-4], dtype=torch.float64))  # zero and positive in one batch
    assert torch.equal(mixed[0], nearest[0]) and torch.allclose(mixed[3], nearest[3], atol=1e-12)
    assert torch.allclose(mixed[1], direct_denoiser(DATA, x[1:2], torch.ones(1, dtype=torch.float64))[0])


def test_large_sigma_gives_the_data_mean() -> None:
    x = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = EmpiricalMixture(DATA)(x, 1e6)
    assert torch.allclose(out, DATA.mean(0).expand_as(out), atol=1e-9)


def test_score_is_the_gradient_of_log_prob_and_log_prob_of_one_point_is_the_gaussian() -> None:
    mix = EmpiricalMixture(DATA, chunk_size=5)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_(
        True
    )
    sigma = torch.tensor([0.3, 0.7, 1.0, 3.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(mix.log_prob(x, sigma).sum(), x)
    assert torch.allclose(mix.score(x.detach(), sigma), grad, rtol=1e-9, atol=1e-12)
    one = EmpiricalMixture(DATA[:1])
    expected = (
        torch.distributions.Normal(DATA[0].reshape(-1), 0.5).log_prob(x.detach().reshape(4, -1)).sum(-1)
    )
    assert torch.allclose(one.log_prob(x.detach(), 0.5), expected, rtol=1e-12)


def test_moments_are_the_data_mean_and_biased_covariance() -> None:
    g = EmpiricalMixture(DATA).moments()
    flat = DATA.reshape(23, -1)
    assert torch.allclose(g.mean.reshape(-1), flat.mean(0), atol=1e-14)
    assert torch.allclose(g.cov.dense(), torch.cov(flat.T, correction=0), atol=1e-12)


def test_float32_input_keeps_its_dtype_and_data_is_copied() -> None:
    data = DATA.clone()
    mix = EmpiricalMixture(data.numpy())
    data.zero_()
    x = DATA[:2].float()
    out = mix(x, torch.tensor([1e-3, 1e-3]))
    assert out.dtype == torch.float32 and torch.allclose(out, DATA[:2].float())
    assert len(mix) == 23 and mix.shape == (2, 3) and mix.dim == 6 and "points=23" in repr(mix)
    assert mix.to("cpu") is mix


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (torch.zeros(0, 3), ValueError),
        (torch.zeros(4), ValueError),
        (torch.tensor([[0.0, math.nan]]), ValueError),
        (torch.tensor([[True, False]]), TypeError),
        ([[0.0, 1.0]], TypeError),
    ],
)
def test_bad_data_is_refused(data: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        EmpiricalMixture(data)  # type: ignore[arg-type]


def test_bad_calls_are_refused() -> None:
    mix = EmpiricalMixture(DATA)
    x = DATA[:2]
    with pytest.raises(ValueError, match="shape"):
        mix(torch.zeros(2, 6, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        mix(x, torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        mix(x, -1.0)
    with pytest.raises(ValueError, match="sigma = 0"):
        mix.log_prob(x, 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        EmpiricalMixture(DATA, chunk_size=0)
