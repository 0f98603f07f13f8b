"""Grid families, truncation and respacing; values against k-diffusion and closed forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaussport import grids

n_levels = st.integers(2, 40)
ranges = st.tuples(st.floats(1e-3, 1.0), st.floats(2.0, 200.0))


@given(n=n_levels, r=ranges, rho=st.floats(1.0, 12.0))
def test_karras_shape_endpoints_monotone(n: int, r: tuple[float, float], rho: float) -> None:
    lo, hi = r
    g = grids.karras(n, lo, hi, rho)
    assert len(g) == n + 1 and g[0] == hi and g[-2] == lo and g[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(g))
    # Uniform in sigma^(1/rho): second differences vanish.
    u = [s ** (1 / rho) for s in g[:-1]]
    assert (
        max(abs(u[i + 1] - 2 * u[i] + u[i - 1]) for i in range(1, n - 1)) < 1e-9 * max(u) if n > 2 else True
    )


@given(n=n_levels, r=ranges)
def test_exponential_is_log_uniform(n: int, r: tuple[float, float]) -> None:
    g = grids.exponential(n, *r, append_zero=False)
    logs = [math.log(s) for s in g]
    steps = [a - b for a, b in itertools.pairwise(logs)]
    assert max(steps) - min(steps) < 1e-10


@pytest.mark.reference
def test_grids_match_k_diffusion() -> None:
    ks = pytest.importorskip("k_diffusion.sampling")
    for ours, theirs in [
        (grids.karras(10, 0.002, 80.0), ks.get_sigmas_karras(10, 0.002, 80.0)),
        (grids.exponential(10, 0.002, 80.0), ks.get_sigmas_exponential(10, 0.002, 80.0)),
        (grids.polyexponential(10, 0.002, 80.0, 2.0), ks.get_sigmas_polyexponential(10, 0.002, 80.0, 2.0)),
    ]:
        theirs = theirs.double()
        assert len(ours) == len(theirs)
        assert torch.allclose(torch.tensor(ours, dtype=torch.float64), theirs, rtol=2e-6, atol=0)


@given(n=st.integers(3, 30), r=ranges, rho=st.floats(1.5, 15.0))
def test_detect_family_recovers_karras_rho(n: int, r: tuple[float, float], rho: float) -> None:
    family = grids.detect_family(grids.karras(n, *r, rho))
    if isinstance(family, grids.ExponentialFamily):  # rho so large the grid is log-uniform to 1e-5
        assert grids.ExponentialFamily().matches(grids.karras(n, *r, rho, append_zero=False))
    else:
        assert isinstance(family, grids.KarrasFamily) and abs(family.rho - rho) < 1e-3 * rho


def test_detect_family_polyexponential_and_unknown() -> None:
    family = grids.detect_family(grids.polyexponential(12, 0.01, 50.0, 2.5))
    assert isinstance(family, grids.PolyExponentialFamily) and abs(family.rho - 2.5) < 1e-6
    assert grids.detect_family([10.0, 9.0, 1.0, 0.9, 0.1]) is None


def test_truncate_keeps_levels_below() -> None:
    g = grids.karras(10, 0.002, 80.0)
    assert grids.truncate(g, g[3]) == g[3:]
    mid = 0.5 * (g[3] + g[4])
    assert grids.truncate(g, mid) == (mid,) + g[4:]
    assert grids.truncate(g, g[3] * (1 + 1e-12)) == g[3:]  # snaps to a level within 1e-9
    with pytest.raises(ValueError, match="outside the grid"):
        grids.truncate(g, 100.0)


@given(n=st.integers(2, 20), skip_fraction=st.floats(0.05, 1.0), rho=st.floats(2.0, 10.0))
def test_respace_same_family_same_steps(n: int, skip_fraction: float, rho: float) -> None:
    g = grids.karras(n, 0.002, 80.0, rho)
    start = 0.002 + skip_fraction * (80.0 - 0.002)
    r = grids.respace(g, start)
    assert len(r) == len(g) and r[0] == pytest.approx(start) and r[-2] == 0.002 and r[-1] == 0.0
    # Same family: a fresh Karras grid over [0.002, start] with the same rho.
    expected = grids.karras(n, 0.002, start, rho)
    assert max(abs(a - b) / max(b, 1e-12) for a, b in zip(r, expected, strict=True)) < 1e-6


def test_respace_of_full_range_is_identity_and_errors() -> None:
    g = grids.exponential(8, 0.01, 20.0)
    assert grids.respace(g, 20.0) == pytest.approx(g, rel=1e-12)
    with pytest.raises(ValueError, match="cannot tell which family"):
        grids.respace([10.0, 9.0, 1.0, 0.9, 0.1], 5.0)
    with pytest.raises(ValueError, match="sigma_start"):
        grids.respace(g, 0.001)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "empty"),
        ([1.0, 1.0], "strictly decreasing"),
        ([1.0, 2.0], "strictly decreasing"),
        ([1.0, -0.5], "negative"),
        ([float("nan"), 0.0], "not finite"),
        (torch.ones(2, 2), "1-D"),
    ],
)
def test_bad_grids_are_rejected(bad: object, match: str) -> None:
    g = grids.karras(4, 0.01, 1.0)
    import gaussport
    from gaussport.analytic import Gaussian

    gauss = Gaussian(torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match=match):
        gaussport.solve(gauss, torch.zeros(1, 2), bad, disable=True)  # type: ignore[arg-type]
    assert g  # the valid grid is accepted elsewhere


def test_family_argument_errors() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        grids.karras(0, 0.01, 1.0)
    with pytest.raises(ValueError, match="sigma_min must be > 0"):
        grids.karras(5, 0.0, 1.0)
    with pytest.raises(ValueError, match="smaller than sigma_max"):
        grids.exponential(5, 2.0, 1.0)


@given(
    levels=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=12),
    repeats=st.lists(st.integers(1, 4), min_size=12, max_size=12),
)
def test_merge_repeats_keeps_every_level_and_where_it_went(levels: list[float], repeats: list[int]) -> None:
    sigmas = [v for v, r in zip(levels, repeats, strict=False) for _ in range(r)]
    merged, where = grids.merge_repeats(sigmas)
    assert len(where) == len(sigmas) and where[0] == 0 and where[-1] == len(merged) - 1
    assert all(merged[where[i]] == s for i, s in enumerate(sigmas))
    assert all(a != b for a, b in itertools.pairwise(merged))  # no two consecutive levels repeat
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(where))  # zero-length interval: b == a
    assert grids.merge_repeats([3.0, 1.0, 1.0, 0.0]) == ((3.0, 1.0, 0.0), (0, 1, 1, 2))
    assert grids.merge_repeats(torch.tensor([0.5, 0.5])) == ((0.5,), (0, 0))
