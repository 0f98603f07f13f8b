"""`gaussport.evaluation.explained`: 1 - EV per noise level, checked against independent computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gaussport.analytic import Gaussian, GaussianMixture
from gaussport.evaluation import ExplainedVariance, explained_variance, plot_explained_variance, safe_level

PNG = b"\x89PNG\r\n\x1a\n"
LEVELS = (0.3, 1.0, 4.0)


def _dense(mean: list[float], factor: list[list[float]], jitter: float) -> Gaussian:
    a = torch.tensor(factor, dtype=torch.float64)
    return Gaussian(
        torch.tensor(mean, dtype=torch.float64), a @ a.T + jitter * torch.eye(3, dtype=torch.float64)
    )


def _mixture() -> GaussianMixture:
    """Three anisotropic components in d = 3, unequal weights."""
    return GaussianMixture(
        [
            _dense([1.5, 0.0, -0.5], [[0.6, 0.1, 0.0], [0.0, 0.3, 0.2], [0.1, 0.0, 0.4]], 0.01),
            _dense([-1.0, 1.0, 0.5], [[0.2, 0.0, 0.0], [0.3, 0.5, 0.0], [0.0, 0.1, 0.3]], 0.02),
            _dense([0.0, -1.5, 1.0], [[0.4, 0.2, 0.1], [0.0, 0.2, 0.0], [0.0, 0.0, 0.5]], 0.01),
        ],
        weights=[0.5, 0.3, 0.2],
    )


def _data(mixture: GaussianMixture, n: int = 40) -> torch.Tensor:
    return mixture.sample(n, generator=torch.Generator().manual_seed(7)).to(torch.float64)


def test_the_gaussian_against_itself_leaves_nothing_unexplained() -> None:
    g = _dense([0.2, -0.1, 0.4], [[0.5, 0.1, 0.0], [0.0, 0.4, 0.1], [0.2, 0.0, 0.3]], 0.05)
    data = g.sample(16, generator=torch.Generator().manual_seed(1))
    r = explained_variance(g, {"gaussian": g}, data, LEVELS, probes=24, model_dtype=torch.float64)
    assert r.levels == LEVELS and r.models == ("gaussian",)
    for table in (r.unexplained, r.unexplained_percentile, r.velocity_error, r.denoiser_unexplained):
        assert table["gaussian"] == (0.0, 0.0, 0.0)
    assert r.explained("gaussian") == (1.0, 1.0, 1.0)
    assert r.safe_level("gaussian") == LEVELS[0]


def test_the_statistics_equal_an_independent_score_computation() -> None:
    """The model is a GaussianMixture; 1 - EV_s of its moment-matched Gaussian equals the Monte-Carlo
    mean of |s - s_G|^2 / |s|^2 with s the autograd gradient of the mixture's noisy log-density and
    s_G = -(Sigma + sigma^2 I)^-1 (x - mu) by a dense solve: no denoiser formula in the reference."""
    mixture = _mixture()
    gaussian = mixture.moments()
    data = _data(mixture)
    probes, seed = 50, 11
    r = explained_variance(
        mixture, {"gaussian": gaussian}, data, LEVELS, probes=probes, seed=seed, percentile=75.0,
        model_dtype=torch.float64, batch_size=16,
    )  # fmt: skip
    # The probes as documented: one generator draws the rows (permutations laid end to end), then the
    # noise level by level in increasing order.
    gen = torch.Generator().manual_seed(seed)
    rows = torch.cat([torch.randperm(data.shape[0], generator=gen) for _ in range(2)])[:probes]
    x0 = data[rows]
    mu, cov = gaussian.mean.reshape(-1), gaussian.cov.dense()
    for i, sigma in enumerate(LEVELS):
        x = (x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
        (score,) = torch.autograd.grad(mixture.log_prob(x, sigma).sum(), x)
        x = x.detach()
        score_g = -torch.linalg.solve(cov + sigma**2 * torch.eye(3, dtype=torch.float64), (x - mu).T).T
        ratio = (score - score_g).square().sum(1) / score.square().sum(1)
        d_model = x + sigma**2 * score  # Tweedie: only for the denoiser-space reference
        d_gauss = x + sigma**2 * score_g
        denoiser_ratio = (d_model - d_gauss).square().sum(1) / d_model.square().sum(1)
        assert r.unexplained["gaussian"][i] == pytest.approx(float(ratio.mean()), rel=1e-9)
        assert r.velocity_error["gaussian"][i] == pytest.approx(float(ratio.sqrt().mean()), rel=1e-9)
        assert r.unexplained_percentile["gaussian"][i] == pytest.approx(float(ratio.quantile(0.75)), rel=1e-9)
        assert r.velocity_error_percentile("gaussian")[i] == pytest.approx(
            math.sqrt(float(ratio.quantile(0.75))), rel=1e-9
        )
        assert r.denoiser_unexplained["gaussian"][i] == pytest.approx(float(denoiser_ratio.mean()), rel=1e-9)
    # The mixture explains more of itself than the Gaussian does at low sigma; both converge at high.
    assert 0.0 < r.unexplained["gaussian"][0] < 1.0
    assert r.unexplained["gaussian"][-1] < r.unexplained["gaussian"][0]


def test_one_model_call_per_probe_and_level_shared_across_analytic_models() -> None:
    mixture = _mixture()
    calls: list[int] = []

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return mixture(x, sigma)

    gaussian = mixture.moments()
    r = explained_variance(
        model, {"gaussian": gaussian, "mixture": mixture}, _data(mixture), LEVELS, probes=10, batch_size=4,
        model_dtype=torch.float64,
    )  # fmt: skip
    assert sum(calls) == 10 * len(LEVELS) and max(calls) == 4
    assert r.unexplained["mixture"] == (0.0, 0.0, 0.0)  # the model itself, exactly
    assert all(v > 0 for v in r.unexplained["gaussian"])


def test_safe_level_and_to_dict_and_plot(tmp_path: Path) -> None:
    mixture = _mixture()
    r = explained_variance(
        mixture, {"gaussian": mixture.moments()}, _data(mixture), (0.5, 2.0, 8.0, 32.0), probes=8,
        model_dtype=torch.float64,
    )  # fmt: skip
    errors = dict(zip(r.levels, r.velocity_error["gaussian"], strict=True))
    for tau in (1e-6, 1e-2, 0.2, 10.0):
        assert r.safe_level("gaussian", tau) == safe_level(errors, tau)
    record = json.loads(json.dumps(r.to_dict()))
    assert record["levels"] == [0.5, 2.0, 8.0, 32.0] and record["probes"] == 8
    assert record["models"]["gaussian"]["velocity_error"] == list(r.velocity_error["gaussian"])
    assert len(r.rows()) == 4 and len(r.rows()[0]) == len(r.header()) == 4
    path = tmp_path / "probe.png"
    assert plot_explained_variance(r, path, safe=8.0, auto=2.0) is True
    assert path.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"levels": []}, ValueError, "levels"),
        ({"levels": [1.0, -2.0]}, ValueError, "levels"),
        ({"levels": [1.0, float("nan")]}, ValueError, "levels"),
        ({"levels": [1.0, 1.0]}, ValueError, "distinct"),
        ({"levels": ["a"]}, TypeError, "levels"),
        ({"probes": 0}, ValueError, "probes"),
        ({"probes": 2.0}, TypeError, "probes"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"percentile": 101.0}, ValueError, "percentile"),
        ({"models": {}}, ValueError, "models"),
        ({"models": [1]}, TypeError, "models"),
        ({"models": {"g": 3}}, TypeError, "models"),
        ({"data": torch.zeros(0, 3)}, ValueError, "data"),
    ],
)
def test_bad_arguments_are_refused_naming_the_problem(kwargs: dict, error: type, words: str) -> None:
    g = Gaussian.diagonal(torch.zeros(3), torch.ones(3))
    call = {"models": {"g": g}, "data": torch.zeros(4, 3), "levels": LEVELS, **kwargs}
    with pytest.raises(error, match=words):
        explained_variance(g, call.pop("models"), call.pop("data"), call.pop("levels"), **call)


def test_an_unknown_model_name_is_refused() -> None:
    r = ExplainedVariance((1.0,), {"g": (0.1,)}, {"g": (0.2,)}, {"g": (0.3,)}, {"g": (0.4,)}, 90.0, 1, 0)
    with pytest.raises(ValueError, match="the models are"):
        r.explained("nope")
