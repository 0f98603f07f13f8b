"""The warm-start plumbing of the adapters: statistics files, bound warm starts, the teleport from noise."""

from __future__ import annotations

import os
import time

import pytest
import torch

from gaussport.adapters._teleport import StatisticsCache, from_noise, load_statistics, resolve_warm_start
from gaussport.adapters.guidance import ClassConditionalGaussian, PerSampleGaussian
from gaussport.testing import random_gaussian


def test_a_statistics_cache_reads_a_file_once_and_again_after_a_rewrite(tmp_path) -> None:
    path = tmp_path / "stats.npz"
    random_gaussian([1.0, 0.5, 0.1], seed=0).save(path)
    cache = StatisticsCache(size=2)
    first = load_statistics(path, cache)
    assert load_statistics(path, cache) is first  # the same object: not read again
    assert load_statistics(path) is not first  # without a cache: read every time
    time.sleep(0.01)
    random_gaussian([2.0, 0.5, 0.1], seed=1).save(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    again = load_statistics(path, cache)
    assert again is not first and not torch.equal(again.mean, first.mean)
    # Bounded: a third file pushes the oldest out.
    for k in range(2):
        random_gaussian([1.0, 0.1, 0.01], seed=k).save(tmp_path / f"other{k}.npz")
        load_statistics(tmp_path / f"other{k}.npz", cache)
    assert load_statistics(path, cache) is not again
    with pytest.raises(ValueError, match="size must be at least 1"):
        StatisticsCache(size=0)


def test_a_class_conditional_warm_start_is_bound_to_the_labels_in_the_arguments() -> None:
    gs = [random_gaussian([1.0, 0.3], seed=k) for k in range(3)]
    ccg = ClassConditionalGaussian(gs, label_key="y")
    bound = resolve_warm_start(ccg, {"y": torch.tensor([2, 0])})
    assert isinstance(bound, PerSampleGaussian) and bound.labels.tolist() == [2, 0]
    x = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([gs[2].flow(x[:1], 5.0, 1.0)[0], gs[0].flow(x[1:], 5.0, 1.0)[0]])
    assert torch.allclose(bound.flow(x, 5.0, 1.0), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        resolve_warm_start(ccg, {})


def test_the_teleport_from_noise_is_the_limit_of_the_flow() -> None:
    # mu + (Sigma + s1^2)^(1/2) z  =  lim_{s -> inf} flow(s z, s, s1).
    g = random_gaussian([2.0, 0.7, 0.05, 0.001], seed=3)
    z = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam, u = torch.linalg.eigh(g.cov.dense())
    for s1 in (0.0, 0.5, 30.0):
        exact = g.mean + (z @ u) * torch.sqrt(lam + s1 * s1) @ u.T
        assert torch.allclose(from_noise(g, z, s1), exact, rtol=1e-12, atol=1e-12)
        # The flow from s = 1e7 differs from the limit by O(|mu| sqrt(lam + s1^2) / s).
        big = 1e7
        assert torch.allclose(g.flow(big * z, big, s1), exact, rtol=0, atol=1e-5 * (1 + s1))
    with pytest.raises(ValueError, match=r"samples of shape \(4,\), but the shape of the noise is \(3,\)"):
        from_noise(g, torch.zeros(2, 3), 1.0)
    with pytest.raises(TypeError, match="from_noise"):
        from_noise(object(), z, 1.0)


def test_the_adapters_read_statistics_files_by_the_sampling_layers_rule() -> None:
    # One rule for a warm start given as a path (docs/warm-start.md): gaussport.sampling owns it and
    # the adapters use the same functions, each with its own cache.
    import gaussport.sampling
    from gaussport.adapters import _teleport

    assert _teleport.load_statistics is gaussport.sampling.load_statistics
    assert _teleport.StatisticsCache is gaussport.sampling.StatisticsCache
    g = random_gaussian([1.0, 0.5], seed=0)
    assert gaussport.sampling.load_warm_start(g) is g and gaussport.sampling.load_warm_start(None) is None
