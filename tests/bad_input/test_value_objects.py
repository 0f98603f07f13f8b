"""Bad input, category "value objects": Gaussian, its covariances, GaussianMixture and EMS.

Value objects copy what they are given (a caller mutating its tensor or NumPy array afterwards
changes nothing, and float32 and float64 calls keep agreeing), and every argument of their
constructors, :meth:`Gaussian.fit` and :meth:`Gaussian.to_low_rank` is checked up front: a wrong
type is a TypeError naming the argument (a bool is not an integer), a wrong value a ValueError
(docs/conventions.md#bad-input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _rules import rejected
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussport.analytic import Dense, Diagonal, Gaussian, GaussianMixture, LowRankPlusIsotropic
from gaussport.ems import EMS

D = 4


def _basis() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q


def _lam() -> torch.Tensor:
    return torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64)


def _agree(g: Gaussian) -> None:
    """float32 and float64 evaluations of the denoiser and the flow agree (one copy of the values)."""
    x = torch.randn(3, *g.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for f in (lambda v: g(v, torch.full((3,), 0.7, dtype=v.dtype)), lambda v: g.flow(v, 2.0, 0.5)):
        lo, hi = f(x.float()), f(x)
        torch.testing.assert_close(lo.double(), hi, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- item 2: copies


def _mutable_cases() -> dict[str, Callable[[], tuple[Any, list[Any], Callable[[Any], Any]]]]:
    """name -> () -> (object, the caller's containers it was built from, what the object holds)."""

    def gaussian_mean() -> tuple:
        m = torch.zeros(D, dtype=torch.float64)
        return Gaussian(m, torch.eye(D, dtype=torch.float64)), [m], lambda g: g.mean

    def gaussian_numpy_mean() -> tuple:
        m = np.zeros(D)
        return Gaussian(m, np.eye(D)), [m], lambda g: g.mean

    def diagonal_variances() -> tuple:
        m, v = torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
        return Gaussian.diagonal(m, v), [m, v], lambda g: (g.mean, g.cov.variances)

    def dense_factors() -> tuple:
        lam, u = _lam(), _basis()
        return (
            Gaussian(torch.zeros(D), Dense(lam, u)),
            [lam, u],
            lambda g: (g.cov.eigenvalues, g.cov.eigenvectors),
        )

    def diagonal_cov() -> tuple:
        var = _lam()
        return Gaussian(torch.zeros(D), Diagonal(var)), [var], lambda g: g.cov.variances

    def lowrank_factors() -> tuple:
        lam, u = _lam()[:2], _basis()[:, :2].contiguous()
        cov = LowRankPlusIsotropic(lam, u, 0.1)
        return Gaussian(torch.zeros(D), cov), [lam, u], lambda g: (g.cov.eigenvalues, g.cov.eigenvectors)

    def mixture_weights() -> tuple:
        w = torch.tensor([0.25, 0.75], dtype=torch.float64)
        g = Gaussian(torch.zeros(D), torch.eye(D))
        return GaussianMixture([g, g], w), [w], lambda m: m.weights

    def ems_arrays() -> tuple:
        ell, s, b = (torch.ones(3, 2, dtype=torch.float64) for _ in range(3))
        meta = {"nested": [1, 2]}
        ems = EMS(ell, s, b, sigma_min=0.1, sigma_max=1.0, metadata=meta)
        return ems, [ell, s, b, meta["nested"]], lambda e: (e.l, e.s, e.b, e.metadata)

    def ems_numpy() -> tuple:
        ell, s, b = (np.ones((3, 2)) for _ in range(3))
        return EMS(ell, s, b, sigma_min=0.1, sigma_max=1.0), [ell, s, b], lambda e: (e.l, e.s, e.b)

    return {
        f.__name__: f
        for f in (
            gaussian_mean,
            gaussian_numpy_mean,
            diagonal_variances,
            dense_factors,
            diagonal_cov,
            lowrank_factors,
            mixture_weights,
            ems_arrays,
            ems_numpy,
        )
    }


MUTABLE = _mutable_cases()


def _snapshot(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_snapshot(v) for v in value)
    return repr(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", list(MUTABLE))
def test_value_objects_copy_caller_tensors(name: str) -> None:
    """Issue 12 item 2: ``m += 1`` after ``Gaussian(m, ...)`` changed ``g.mean`` (float64 shared memory)."""
    obj, inputs, held = MUTABLE[name]()
    before = _snapshot(held(obj))
    for t in inputs:
        if isinstance(t, list):
            t.append(3)
        else:
            t += 1  # noqa: PLW2901 - in place, as a caller would
    assert _same(before, _snapshot(held(obj))), f"{name}: mutating the caller's input changed the object"
    if isinstance(obj, Gaussian):
        _agree(obj)


def test_issue_example_float32_and_float64_agree_after_mutation() -> None:
    m = torch.zeros(6, dtype=torch.float64)
    g = Gaussian(m, torch.eye(6))
    x = torch.ones(2, 6, dtype=torch.float64)
    g(x.float(), torch.ones(2))  # caches the float32 copy of the mean
    m += 1
    assert torch.equal(g.mean, torch.zeros(6, dtype=torch.float64))
    _agree(g)
    g.mean.add_(5)  # what a caller can reach is a copy too
    assert torch.equal(g.mean, torch.zeros(6, dtype=torch.float64))


# ---------------------------------------------------------------------- item 7: arguments

JUNK = st.one_of(
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.none(),
    st.lists(st.integers(-2, 5), max_size=2),
    st.integers(-(2**40), 2**40),
    st.sampled_from([torch.tensor(2), torch.tensor(2.0), torch.tensor([1, 2]), np.int64(2), np.float64(2.0)]),
)


def _valid_count(value: Any, minimum: int) -> bool:
    """An integer (Python, NumPy, 0-d integer tensor; never a bool) of at least ``minimum``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        ok = value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
        return ok and int(value) >= minimum
    return isinstance(value, (int, np.integer)) and int(value) >= minimum


def _data() -> torch.Tensor:
    return torch.randn(9, D, generator=torch.Generator().manual_seed(2))


@settings(max_examples=40)
@given(batch_size=JUNK)
def test_fit_batch_size_is_a_positive_integer(batch_size: Any) -> None:
    if _valid_count(batch_size, 1):
        assert Gaussian.fit(_data(), batch_size=batch_size).dim == D
        return
    exc = rejected(lambda: Gaussian.fit(_data(), batch_size=batch_size))
    assert "batch_size" in str(exc)


@settings(max_examples=40)
@given(rank=JUNK)
def test_rank_is_an_integer_in_range(rank: Any) -> None:
    dense = Gaussian.fit(_data())
    for call in (
        lambda: Gaussian.fit(_data(), representation="lowrank", rank=rank),
        lambda: dense.to_low_rank(rank),
    ):
        if _valid_count(rank, 0) and int(rank) <= D:
            assert call().representation == "lowrank"
        else:
            assert "rank" in str(rejected(call))


def test_fit_and_to_low_rank_arguments_are_named() -> None:
    """Issue 12 item 7: batch_size 0/-1 raised RuntimeError; rank=2.5 a TypeError without 'rank'."""
    data, dense = _data(), Gaussian.fit(_data())
    for bad in (0, -1, True, 2.5, "8"):
        exc = rejected(lambda: Gaussian.fit(data, batch_size=bad))  # noqa: B023
        assert "batch_size" in str(exc)
    for call in (
        lambda: Gaussian.fit(data, representation="lowrank", rank=2.5),
        lambda: dense.to_low_rank(2.5),
        lambda: dense.to_low_rank(True),
    ):
        exc = rejected(call)
        assert isinstance(exc, TypeError) and "rank" in str(exc)
    assert "rank" in str(rejected(lambda: dense.to_low_rank(D + 1)))
    assert "rank" in str(rejected(lambda: Gaussian.fit(data, rank=2)))  # rank without "lowrank"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"representation": "full"},
        {"representation": None},
        {"representation": "lowrank"},  # no rank
        {"scale": 2.0},
        {"source": ["a"]},
    ],
)
def test_other_fit_arguments(kwargs: dict) -> None:
    rejected(lambda: Gaussian.fit(_data(), **kwargs))


@pytest.mark.parametrize("data", ["abc", 3.0, None, torch.zeros(0, D), torch.zeros(D), [torch.zeros(5)]])
def test_fit_data(data: Any) -> None:
    rejected(lambda: Gaussian.fit(data))


@pytest.mark.parametrize(
    "value",
    [7.5, torch.tensor(7.0), True, "7", np.float64(7.0), 0, -3, torch.tensor([7]), [7]],
)
def test_n_samples_must_be_a_positive_integer(value: Any) -> None:
    exc = rejected(lambda: Gaussian(torch.zeros(2), torch.eye(2), n_samples=value))
    assert "n_samples" in str(exc)
    assert "samples" in str(
        rejected(
            lambda: EMS.degenerate().__class__(
                torch.ones(2), torch.ones(2), torch.ones(2), sigma_min=0.1, sigma_max=1.0, samples=value
            )
        )
    )


@pytest.mark.parametrize("value", [np.int64(7), np.int32(7), torch.tensor(7), 7])
def test_integral_counts_become_python_ints(value: Any) -> None:
    g = Gaussian(torch.zeros(2), torch.eye(2), n_samples=value)
    assert type(g.n_samples) is int and g.n_samples == 7
    e = EMS(torch.ones(2), torch.ones(2), torch.ones(2), sigma_min=0.1, sigma_max=1.0, samples=value)
    assert type(e.samples) is int and e.samples == 7


BAD_DIAGONAL: list[tuple[Any, Any, dict]] = [
    (torch.zeros(3), torch.ones(2), {}),  # size mismatch
    (torch.zeros(3), -torch.ones(3), {}),  # negative variances
    (torch.zeros(3), torch.tensor([1.0, math.nan, 1.0]), {}),
    (torch.zeros(3), torch.tensor([True, False, True]), {}),
    (torch.zeros(3), "1 1 1", {}),
    (torch.zeros(3), torch.ones(3), {"n_sample": 3}),  # a misspelt keyword
    (torch.zeros(3), torch.ones(3), {"scale": 1.0}),
    (torch.zeros(3), torch.ones(3), {"n_samples": True}),
    (torch.tensor(0.0), torch.ones(1), {}),
    ("mean", torch.ones(3), {}),
    (torch.zeros(3, dtype=torch.complex64), torch.ones(3), {}),
]


@pytest.mark.parametrize(("mean", "variances", "kwargs"), BAD_DIAGONAL)
def test_diagonal_arguments(mean: Any, variances: Any, kwargs: dict) -> None:
    rejected(lambda: Gaussian.diagonal(mean, variances, **kwargs))


def _g(shape: tuple[int, ...] = (D,)) -> Gaussian:
    return Gaussian(torch.zeros(shape), torch.eye(math.prod(shape)))


BAD_MIXTURES: list[tuple[Any, Any]] = [
    ([], None),
    (_g(), None),  # one Gaussian, not a sequence
    ("ab", None),
    ([_g(), "x"], None),
    ([_g(), _g((2, 2))], None),
    ([_g(), _g()], [1.0]),
    ([_g(), _g()], [1.0, -1.0]),
    ([_g(), _g()], [0.0, 0.0]),
    ([_g(), _g()], [1.0, math.nan]),
    ([_g(), _g()], [1.0, math.inf]),
    ([_g(), _g()], [True, True]),
    ([_g(), _g()], torch.tensor([True, True])),
    ([_g(), _g()], "ab"),
    ([_g(), _g()], [[1.0, 1.0]]),
    ([_g(), _g()], [1.0, "a"]),
    ([_g(), _g()], torch.tensor([1.0, 1.0j])),
]


@pytest.mark.parametrize(("components", "weights"), BAD_MIXTURES)
def test_mixture_arguments(components: Any, weights: Any) -> None:
    rejected(lambda: GaussianMixture(components, weights))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Dense(_lam(), _basis()[:, :3]),
        lambda: Dense(_lam(), torch.full((D, D), math.nan)),
        lambda: Dense(torch.tensor([1.0, math.inf, 0.0, 0.0]), _basis()),
        lambda: LowRankPlusIsotropic(_lam()[:2], torch.full((D, 2), math.nan), 0.1),
        lambda: LowRankPlusIsotropic(_lam()[:2], _basis()[:, :2], True),
        lambda: LowRankPlusIsotropic(_lam()[:2], _basis()[:, :2], "0.1"),
        lambda: LowRankPlusIsotropic(_lam()[:2], _basis()[:, :2], -0.1),
        lambda: LowRankPlusIsotropic.from_dense(Dense(_lam(), _basis()), 2.5),
        lambda: Diagonal(torch.ones(2, 2)),
        lambda: Diagonal("abc"),
        lambda: EMS(
            torch.ones(3),
            torch.ones(3),
            torch.ones(3),
            sigma_min=0.1,
            sigma_max=1.0,
            metadata={"t": torch.ones(1)},
        ),
        lambda: EMS(torch.ones(3), torch.ones(3), torch.ones(3), sigma_min=0.1, sigma_max=1.0, source=3),
        lambda: EMS(torch.ones(3), torch.ones(3), torch.ones(3), sigma_min=True, sigma_max=1.0),
        lambda: EMS(torch.ones(3), torch.ones(3), torch.ones(3), sigma_min="0.1", sigma_max=1.0),
        lambda: EMS(
            torch.ones(3), torch.ones(3), torch.tensor([True, True, True]), sigma_min=0.1, sigma_max=1.0
        ),
    ],
)
def test_covariance_and_ems_arguments(make: Callable[[], Any]) -> None:
    rejected(make)
