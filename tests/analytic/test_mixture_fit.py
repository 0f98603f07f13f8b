"""Fitting a GaussianMixture from data: k-means, class-wise fits, shrinkage, responsibilities."""

from __future__ import annotations

import math

import pytest
import torch

from gaussport.analytic import Gaussian, GaussianMixture, fit_class_mixture, fit_kmeans_mixture, kmeans


def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated 2-D blobs of 30, 20 and 10 points (labels 0, 1, 2)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    sizes = (30, 20, 10)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    x = centres[labels] + 0.5 * torch.randn(len(labels), 2, generator=gen, dtype=torch.float64)
    return x, labels


def test_kmeans_recovers_separated_blobs_reproducibly_without_the_global_rng() -> None:
    x, labels = blobs()
    state = torch.random.get_rng_state()
    centres, found = kmeans(x, 3, generator=torch.Generator().manual_seed(4), restarts=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    # The same partition up to renaming: each true blob maps to exactly one cluster.
    pairs = {(int(a), int(b)) for a, b in zip(labels, found, strict=True)}
    assert len(pairs) == 3 and len({b for _, b in pairs}) == 3
    for k in range(3):
        assert torch.allclose(centres[found[labels == k][0]], x[labels == k].mean(0), atol=1e-12)
    again, _ = kmeans(x, 3, generator=torch.Generator().manual_seed(4), restarts=2)
    assert torch.equal(centres, again)


def test_kmeans_with_as_many_clusters_as_points_puts_each_point_alone() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    centres, labels = kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(centres[labels], x)
    assert sorted(labels.tolist()) == [0, 1, 2, 3]


def test_kmeans_refills_empty_clusters_without_emptying_others() -> None:
    # Three distinct values, five clusters: Lloyd's step leaves clusters empty, and a refill must
    # take a point from a cluster that keeps at least one member.
    x = torch.tensor([[0.0], [0.0], [0.0], [5.0], [5.0], [9.0]], dtype=torch.float64)
    for seed in range(4):
        centres, labels = kmeans(x, 5, generator=torch.Generator().manual_seed(seed))
        assert bool(torch.isfinite(centres).all())
        assert int((torch.bincount(labels, minlength=5) > 0).sum()) == 5
        assert torch.equal(centres[labels], x)  # every point sits on its centre


def test_class_mixture_defaults_are_the_class_gaussians() -> None:
    x, labels = blobs(1)
    mix = fit_class_mixture(x, labels.numpy())
    assert torch.allclose(mix.weights, torch.tensor([0.5, 1 / 3, 1 / 6], dtype=torch.float64), rtol=1e-14)
    for k, comp in enumerate(mix.components):
        members = x[labels == k]
        assert torch.allclose(comp.mean, members.mean(0), atol=1e-14)
        assert torch.allclose(comp.cov.dense(), torch.cov(members.T), atol=1e-12)  # N - 1
        fitted = Gaussian.fit(members)
        assert torch.allclose(comp.cov.dense(), fitted.cov.dense(), atol=1e-12)


def test_shrinkage_and_floor_follow_the_documented_formula() -> None:
    # 1-D clusters A = {0, 2, 4} (scatter 8), B = {10, 11} (scatter 0.5), C = {20} (a singleton).
    x = torch.tensor([[0.0], [2.0], [4.0], [10.0], [11.0], [20.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    pooled = (8.0 + 0.5) / (6 - 3)
    mix = fit_class_mixture(x, labels, prior_count=1.0, floor=0.1)
    expected = [(8.0 + pooled) / 3, (0.5 + pooled) / 2, pooled]
    for comp, var in zip(mix.components, expected, strict=True):
        assert float(comp.cov.dense()) == pytest.approx(var + 0.1 * pooled, rel=1e-13)
    plain = fit_class_mixture(x, labels)  # no shrinkage: the singleton still gets the pooled variance
    assert [float(c.cov.dense()) for c in plain.components] == pytest.approx([4.0, 0.5, pooled], rel=1e-13)


def test_kmeans_mixture_has_positive_definite_components_even_for_singletons() -> None:
    x, _ = blobs(2)
    x = torch.cat([x, torch.tensor([[40.0, 40.0]], dtype=torch.float64)])  # an outlier: its own cluster
    mix = fit_kmeans_mixture(x.reshape(-1, 1, 2), 4, generator=torch.Generator().manual_seed(1))
    assert len(mix) == 4 and mix.shape == (1, 2)
    assert sorted(round(float(w) * 61) for w in mix.weights) == [1, 10, 20, 30]
    for comp in mix.components:
        assert float(torch.linalg.eigvalsh(comp.cov.dense()).min()) > 0.0


def test_responsibilities_are_a_stable_softmax_in_float64() -> None:
    x, labels = blobs(3)
    mix = fit_class_mixture(x, labels, prior_count=1.0)
    probe = torch.tensor([[0.1, 0.2], [5.0, 5.0], [1e4, -1e4]], dtype=torch.float64)
    for sigma in (0.0, 0.3, 5.0):
        r = mix.responsibilities(probe, sigma)
        assert r.dtype == torch.float64 and bool(torch.isfinite(r).all())
        assert torch.allclose(r.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-14)
        # Independent: Bayes' rule with the component densities, where they do not underflow.
        dens = torch.stack([c.log_prob(probe[:2], sigma).exp() for c in mix.components], -1) * mix.weights
        assert torch.allclose(r[:2], dens / dens.sum(-1, keepdim=True), rtol=1e-10, atol=1e-300)
    # Far away every density underflows to 0; the log-sum-exp still picks one component.
    assert float(r[2].max()) == pytest.approx(1.0)
    assert math.isclose(float(mix.responsibilities(probe[:1], 0.0)[0, 0]), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda x, y: kmeans(x, 0), ValueError),
        (lambda x, y: kmeans(x, 61), ValueError),
        (lambda x, y: kmeans(x, 2.0), TypeError),
        (lambda x, y: kmeans(x[:, 0], 2), ValueError),
        (lambda x, y: kmeans(torch.full_like(x, math.nan), 2), ValueError),
        (lambda x, y: fit_class_mixture(x, y[:-1]), ValueError),
        (lambda x, y: fit_class_mixture(x, y.double()), ValueError),
        (lambda x, y: fit_class_mixture(x, y, prior_count=-1.0), ValueError),
        (lambda x, y: fit_kmeans_mixture(x, 2, floor=math.inf), ValueError),
        (lambda x, y: fit_kmeans_mixture("data", 2), TypeError),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception]) -> None:  # noqa: ANN001
    x, y = blobs()
    with pytest.raises(error):
        call(x, y)


def test_a_fitted_mixture_round_trips_through_a_file(tmp_path) -> None:  # noqa: ANN001
    x, labels = blobs(4)
    mix = fit_kmeans_mixture(x, 3, generator=torch.Generator().manual_seed(0))
    mix.save(tmp_path / "m.npz")
    back = GaussianMixture.load(tmp_path / "m.npz")
    probe = x[:5]
    assert torch.allclose(
        back(probe, torch.full((5,), 0.4, dtype=torch.float64)), mix(probe, 0.4), atol=1e-12
    )
