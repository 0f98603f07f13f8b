"""Hypothesis strategies for solver tests: spectra, Gaussians, noise-level grids, batch sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hypothesis import strategies as st

from ..analytic import Dense, Diagonal, Gaussian, LowRankPlusIsotropic


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high), allow_nan=False).map(lambda e: 10.0**e)


def spectra(
    min_dim: int = 1, max_dim: int = 8, *, low: float = 1e-3, high: float = 10.0, zeros: bool = False
) -> st.SearchStrategy[list[float]]:
    """Eigenvalue lists, log-uniform in ``[low, high]``.

    With ``zeros``, some entries are exactly 0 (rank-deficient covariances).
    """
    value = st.one_of(_log_uniform(low, high), st.just(0.0)) if zeros else _log_uniform(low, high)
    return st.integers(min_dim, max_dim).flatmap(lambda d: st.lists(value, min_size=d, max_size=d))


def random_gaussian(spectrum: Sequence[float], seed: int = 0, *, representation: str = "dense") -> Gaussian:
    """A float64 Gaussian with the given eigenvalues, a random orthonormal basis and a random mean.

    ``representation``: ``"dense"``, ``"diagonal"`` (axis-aligned) or ``"lowrank"`` (the nonzero
    eigenpairs explicit, zero residual -- rank deficient when the spectrum has zeros).
    """
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor(list(spectrum), dtype=torch.float64)
    d = lam.numel()
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    if representation == "diagonal":
        return Gaussian(mean, Diagonal(lam))
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    if representation == "dense":
        return Gaussian(mean, Dense(lam, basis))
    if representation == "lowrank":
        keep = lam > 0
        return Gaussian(mean, LowRankPlusIsotropic(lam[keep], basis[:, keep], 0.0))
    raise ValueError(f"unknown representation {representation!r}.")


def gaussians(
    min_dim: int = 1, max_dim: int = 8, *, zeros: bool = False, representation: str = "dense"
) -> st.SearchStrategy[Gaussian]:
    """Random float64 Gaussians (see :func:`random_gaussian`)."""
    return st.builds(
        lambda spec, seed: random_gaussian(spec, seed, representation=representation),
        spectra(min_dim, max_dim, zeros=zeros),
        st.integers(0, 2**31 - 1),
    )


def sigma_grids(
    min_steps: int = 1,
    max_steps: int = 12,
    *,
    sigma_min: float = 1e-2,
    sigma_max: float = 80.0,
    end_in_zero: bool | None = None,
    max_ratio: float = 4.0,
) -> st.SearchStrategy[tuple[float, ...]]:
    """Strictly decreasing grids of ``min_steps..max_steps`` intervals starting anywhere.

    Adjacent positive levels differ by a factor in ``[1.05, max_ratio]``; the first level is drawn
    log-uniformly from ``[sigma_min, sigma_max]`` (raised if the gaps need more room); the grid ends
    in 0 always, never, or either (``end_in_zero=None``).
    """

    def build(gaps: list[float], top: float, zero: bool) -> tuple[float, ...]:
        top = max(top, sigma_min * math.exp(sum(gaps)))
        levels = [top]
        for gap in gaps:
            levels.append(levels[-1] / math.exp(gap))
        return tuple(levels) + ((0.0,) if zero else ())

    gap = st.floats(math.log(1.05), math.log(max_ratio))
    zeros = st.booleans() if end_in_zero is None else st.just(end_in_zero)
    return st.builds(
        build, st.lists(gap, min_size=0, max_size=max_steps), _log_uniform(sigma_min, sigma_max), zeros
    ).filter(lambda g: min_steps <= len(g) - 1 <= max_steps)


def batch_sizes(max_size: int = 4) -> st.SearchStrategy[int]:
    return st.integers(1, max_size)
