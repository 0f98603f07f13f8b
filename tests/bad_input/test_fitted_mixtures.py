"""Bad input, category "mixtures": EmpiricalMixture, MixtureFlow, k-means and class-wise fits.

Every case must raise a ValueError or TypeError naming the problem (``_rules.rejected``); states and
noise levels a mixture may legitimately take must give finite results (``finite_or_rejected``).
A MixtureFlow used as a warm start goes through :func:`gaussport.sample` with bad levels too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import DIM, GRID, tiny_gaussian, tiny_state
from hypothesis import given
from hypothesis import strategies as st

import gaussport
from gaussport.analytic import (
    EmpiricalMixture,
    GaussianMixture,
    MixtureFlow,
    fit_class_mixture,
    fit_kmeans_mixture,
    kmeans,
)

DATA = torch.randn(12, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
LABELS = torch.arange(12) % 3
EMPIRICAL = EmpiricalMixture(DATA, chunk_size=5)
FLOW = MixtureFlow(GaussianMixture([tiny_gaussian(), tiny_gaussian().affine(1.0, 1.0)]))

BAD_DATA: list[Any] = [
    torch.zeros(0, DIM),
    torch.zeros(DIM),
    torch.zeros(3, 0),
    torch.tensor([[0.0, math.nan]]),
    torch.tensor([[0.0, math.inf]]),
    torch.ones(3, DIM, dtype=torch.bool),
    torch.ones(3, DIM, dtype=torch.complex64),
    np.array([["a", "b"]]),
    "data",
    [[0.0, 1.0]],
    None,
]


@pytest.mark.parametrize("data", BAD_DATA, ids=range(len(BAD_DATA)))
def test_bad_data_is_refused_by_every_constructor(data: Any) -> None:
    rejected(lambda: EmpiricalMixture(data))
    rejected(lambda: kmeans(data, 1))
    rejected(lambda: fit_kmeans_mixture(data, 1))
    rejected(lambda: fit_class_mixture(data, [0, 1, 2]))


BAD_OPTIONS: list[Any] = [
    lambda: EmpiricalMixture(DATA, chunk_size=0),
    lambda: EmpiricalMixture(DATA, chunk_size=2.5),
    lambda: EmpiricalMixture(DATA, chunk_size=True),
    lambda: kmeans(DATA, 13),
    lambda: kmeans(DATA, 0),
    lambda: kmeans(DATA, "3"),
    lambda: kmeans(DATA, 2, iterations=0),
    lambda: kmeans(DATA, 2, restarts=-1),
    lambda: fit_kmeans_mixture(DATA, 2, prior_count=math.nan),
    lambda: fit_kmeans_mixture(DATA, 2, floor=-1.0),
    lambda: fit_class_mixture(DATA, LABELS[:5]),
    lambda: fit_class_mixture(DATA, LABELS.float()),
    lambda: fit_class_mixture(DATA, LABELS.bool()),
    lambda: MixtureFlow(GaussianMixture),
    lambda: MixtureFlow("mixture"),
    lambda: MixtureFlow(EMPIRICAL, method="rk45"),
    lambda: MixtureFlow(EMPIRICAL, rtol=math.nan),
    lambda: MixtureFlow(EMPIRICAL, atol=-1e-9),
    lambda: MixtureFlow(EMPIRICAL, rtol=0.0, atol=0.0),
    lambda: MixtureFlow(EMPIRICAL, rtol=True),
    lambda: MixtureFlow(EMPIRICAL, steps_per_unit=0),
    lambda: MixtureFlow(EMPIRICAL, max_steps=1.5),
]


@pytest.mark.parametrize("call", BAD_OPTIONS, ids=range(len(BAD_OPTIONS)))
def test_bad_options_are_refused(call: Any) -> None:
    rejected(call)


BAD_STATES: list[Any] = [
    torch.zeros(2, DIM + 1),
    torch.zeros(DIM),
    torch.zeros(2, DIM, dtype=torch.int64),
    "x",
]


@pytest.mark.parametrize("x", BAD_STATES, ids=range(len(BAD_STATES)))
def test_bad_states_are_refused(x: Any) -> None:
    rejected(lambda: EMPIRICAL(x, 1.0))
    rejected(lambda: EMPIRICAL.nearest(x))
    rejected(lambda: FLOW.flow(x, 10.0, 1.0))
    rejected(lambda: MixtureFlow(EMPIRICAL).flow(x, 10.0, 1.0))


BAD_SIGMAS: list[Any] = [-1.0, math.nan, math.inf, torch.ones(3), torch.ones(2, 1)]


@pytest.mark.parametrize("sigma", BAD_SIGMAS, ids=range(len(BAD_SIGMAS)))
def test_bad_noise_levels_are_refused(sigma: Any) -> None:
    x = tiny_state().double()
    rejected(lambda: EMPIRICAL(x, sigma))
    rejected(lambda: EMPIRICAL.score(x, sigma))
    rejected(lambda: EMPIRICAL.log_prob(x, sigma))


@pytest.mark.parametrize(
    ("s0", "s1"), [(10.0, 0.0), (0.0, 1.0), (-1.0, 1.0), (10.0, math.nan), (math.inf, 1.0)]
)
def test_bad_flow_levels_are_refused_directly_and_through_sample(s0: float, s1: float) -> None:
    x = tiny_state().double()
    rejected(lambda: FLOW.flow(x, s0, s1))
    rejected(lambda: MixtureFlow(EMPIRICAL).flow(x, s0, s1))


def test_sample_with_a_mixture_flow_refuses_a_zero_skip() -> None:
    rejected(
        lambda: gaussport.sample(
            tiny_gaussian(), tiny_state(), GRID, "heun", warm_start=FLOW, sigma_skip=0.0, disable=True
        )
    )


@given(
    x=st.lists(st.floats(-1e6, 1e6), min_size=DIM, max_size=DIM),
    sigma=st.floats(0.0, 1e6),
)
def test_any_finite_state_and_level_gives_a_finite_denoiser(x: list[float], sigma: float) -> None:
    state = torch.tensor([x], dtype=torch.float64)
    out = finite_or_rejected(lambda: EMPIRICAL(state, sigma))
    assert out is not None  # a finite state at a level >= 0 is valid input
    if sigma > 0:
        finite_or_rejected(lambda: EMPIRICAL.score(state, sigma))
        finite_or_rejected(lambda: EMPIRICAL.log_prob(state, sigma))
