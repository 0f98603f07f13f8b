"""Bad states: ``x`` (and ``state=``) of the wrong kind, dtype, shape, device or with NaN.

Every entry point (:func:`gaussport.solve`, :func:`gaussport.sample`, :func:`gaussport.invert`, a
k-diffusion drop-in sampler on a real k-diffusion model) refuses them by name and leaves the caller's
tensors alone. What is returned is checked after the cast to the caller's dtype (issue 12, item 8), and a
batch of 0 runs (item 5). Cases: ``len(MALFORMED)`` explicit states and ``NAN_EXAMPLES`` generated
ones through the four entry points, ``len(SOLVERS)`` batch-of-0 runs per entry point, and the
continuation states of ``test_a_state_of_another_run_is_refused``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import DIM, GRID, UP, eps_model, tiny_gaussian, tiny_state
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport.adapters import k_diffusion as gk
from gaussport.adapters.flow import sample_rectified_flow

G = tiny_gaussian()
SOLVERS = gaussport.solvers.available()
INVERTING = gaussport.solvers.available(inversion=True)


def _entry_points(x: Any, k_model: Any, solver: str = "euler") -> dict[str, Callable[[], Any]]:
    kd = gk.as_k_diffusion_sampler(solver)
    return {
        "solve": lambda: gaussport.solve(G, x, GRID, solver, disable=True),
        "sample": lambda: gaussport.sample(G, x, GRID, solver, warm_start=G, sigma_skip=4.0, disable=True),
        "invert": lambda: gaussport.invert(G, x, UP, "euler", warm_start=G, sigma_skip=4.0, disable=True),
        # with a warm start, whose shape check comes before any model call (the tiny net would raise)
        "k-diffusion": lambda: kd(k_model, x, torch.tensor(GRID), warm_start=G, sigma_skip=4.0, disable=True),
        "k-diffusion one level": lambda: kd(k_model, x, [10.0], disable=True),  # x itself comes back
    }


def _nan_at(x: torch.Tensor, i: int, value: float) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[i % x.numel()] = value
    return x


MALFORMED: list[tuple[str, Callable[[], Any]]] = [
    ("NaN", lambda: _nan_at(tiny_state(), 3, float("nan"))),
    ("inf", lambda: _nan_at(tiny_state(), 0, float("inf"))),
    ("-inf float64", lambda: _nan_at(tiny_state(dtype=torch.float64), 1, float("-inf"))),
    ("NaN float16", lambda: _nan_at(tiny_state(dtype=torch.float16), 2, float("nan"))),
    ("NaN bfloat16", lambda: _nan_at(tiny_state(dtype=torch.bfloat16), 2, float("nan"))),
    ("int64", lambda: tiny_state().long()),
    ("int32", lambda: tiny_state().int()),
    ("uint8", lambda: tiny_state().abs().to(torch.uint8)),
    ("bool", lambda: tiny_state() > 0),
    ("complex64", lambda: tiny_state().to(torch.complex64)),
    ("0-d tensor", lambda: torch.tensor(1.0)),
    ("numpy array", lambda: tiny_state().numpy()),
    ("list", lambda: tiny_state().tolist()),
    ("float", lambda: 1.0),
    ("None", lambda: None),
    ("meta tensor", lambda: torch.empty(2, DIM, device="meta")),
    ("sparse tensor", lambda: tiny_state().to_sparse()),
    ("wrong sample size", lambda: torch.zeros(2, DIM + 1)),
    ("extra dimension", lambda: torch.zeros(2, DIM, 1)),
    ("no batch dimension", lambda: torch.zeros(DIM)),
]


@pytest.mark.parametrize("label,make", MALFORMED, ids=[label for label, _ in MALFORMED])
def test_a_malformed_state_is_refused_everywhere(label: str, make: Callable[[], Any], k_model: Any) -> None:
    x = make()
    before = x.clone() if isinstance(x, torch.Tensor) and not x.is_meta else None
    for where, call in _entry_points(x, k_model).items():
        if where == "k-diffusion one level" and label in (
            "wrong sample size",
            "extra dimension",
            "no batch dimension",
        ):
            continue  # no model call and no warm start: nothing to disagree with
        rejected(call)
    if before is not None:  # the caller's tensor is untouched, bit for bit (NaN included)
        dense = x.to_dense() if x.is_sparse else x
        torch.testing.assert_close(
            dense, before.to_dense() if before.is_sparse else before, rtol=0, atol=0, equal_nan=True
        )


NAN_EXAMPLES = 30


@settings(max_examples=NAN_EXAMPLES)
@given(
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    where=st.integers(0, 64),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_generated_non_finite_states(
    batch: int, dtype: torch.dtype, where: int, value: float, k_model: Any
) -> None:
    x = _nan_at(tiny_state(batch, dtype=dtype), where, value)
    for where_, call in _entry_points(x, k_model).items():
        exc = rejected(call)
        assert "NaN or infinite" in str(exc), where_


@settings(max_examples=15)
@given(
    shape=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    solver=st.sampled_from(SOLVERS),
)
def test_any_shape_runs_with_an_elementwise_model(shape: list[int], dtype: torch.dtype, solver: str) -> None:
    # Zero-size batches and sample dimensions included: the solvers never reshape.
    x = torch.ones(shape, dtype=dtype)
    out = finite_or_rejected(lambda: gaussport.solve(lambda x, s: 0.5 * x, x, GRID, solver, disable=True))
    assert out is not None and out.x.shape == x.shape and out.x.dtype == dtype


# ----------------------------------------------------------------------------- item 5: a batch of 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_batch_of_zero_runs_with_a_gaussian(solver: str, k_model: Any) -> None:
    # Issue 12, item 5: reshape(0, -1) raised RuntimeError when the model or warm start was a Gaussian.
    empty = torch.zeros(0, DIM)
    runs = [
        gaussport.solve(G, empty, GRID, solver, disable=True),
        gaussport.sample(G, empty, GRID, solver, warm_start=G, sigma_skip=4.0, disable=True),
        gaussport.sample(lambda x, s: x * 0, empty, GRID, solver, warm_start=G, sigma_skip=1.0, disable=True),
    ]
    if solver in INVERTING:
        runs += [
            gaussport.invert(G, empty, UP, solver, disable=True),
            gaussport.invert(G, empty, UP, solver, warm_start=G, sigma_skip=4.0, callback=lambda i: None),
        ]
    for run in runs:
        assert run.x.shape == (0, DIM) and run.x.dtype == empty.dtype
    out = gk.as_k_diffusion_sampler(solver)(k_model, empty, GRID, warm_start=G, sigma_skip=4.0, disable=True)
    assert out.shape == (0, DIM)


def test_a_batch_of_zero_through_a_gaussian_mixture() -> None:
    mixture = gaussport.analytic.GaussianMixture([G, tiny_gaussian().affine(2.0)])
    assert gaussport.solve(mixture, torch.zeros(0, DIM), GRID, "heun", disable=True).x.shape == (0, DIM)


# ----------------------------------------------------------------------------- item 8: what is returned


class _Huge(torch.nn.Module):
    """eps in float32 whatever the input: the wrapper's D = x + 7e4 sigma leaves float16's range."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape, -7e4, dtype=torch.float32)


def test_a_float16_result_that_overflows_is_an_error_not_inf(k_diffusion: Any) -> None:
    # Issue 12, item 8: the finiteness check ran before the cast to the caller's float16.
    x16 = tiny_state(dtype=torch.float16)

    def huge(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # finite in float32, > 65504
        return torch.full(x.shape, 7e4, dtype=torch.float32)

    calls = {
        "solve": lambda: gaussport.solve(huge, x16, GRID, "euler", disable=True),
        "sample": lambda: gaussport.sample(
            huge, x16, GRID, "heun", warm_start=G, sigma_skip=4.0, disable=True
        ),
        "invert": lambda: gaussport.invert(huge, x16.abs() + 1, UP, "euler", disable=True),
        "k-diffusion": lambda: gk.sample_euler(  # one step: the model's input stays in range
            eps_model(k_diffusion, _Huge()), x16 / 10, [1.0, 0.0], disable=True
        ),
        "rectified flow": lambda: sample_rectified_flow(huge, x16, [0.5, 0.2, 0.0], "euler", disable=True),
    }
    for where, call in calls.items():
        with pytest.raises(FloatingPointError, match="overflows the input's dtype torch.float16") as info:
            call()
        assert "float32" in str(info.value), where
    # check_finite=False returns what was asked for
    assert torch.isinf(gaussport.solve(huge, x16, GRID, "euler", check_finite=False, disable=True).x).all()
    # in float32 the same run is fine
    assert torch.isfinite(gaussport.solve(huge, x16.float(), GRID, "euler", disable=True).x).all()


def test_a_non_finite_result_names_the_model(k_model: Any) -> None:
    x = tiny_state()
    with pytest.raises(FloatingPointError, match="denoiser returned non-finite"):
        gaussport.solve(lambda x, s: x * float("nan"), x, GRID, "euler", disable=True)


# ----------------------------------------------------------------------------- state=


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_state_of_another_run_is_refused(solver: str) -> None:
    x = tiny_state(3)
    first = gaussport.solve(G, x, GRID[:3], solver, disable=True)
    others = ["garbage", 0, object()]
    if first.state is not None:
        others.append(gaussport.solve(G, x, GRID[:3], "euler", disable=True).state)  # None: no state
    for state in others:
        if state is None:
            continue
        rejected(lambda state=state: gaussport.solve(G, first.x, GRID[2:], solver, state=state, disable=True))
    if first.state is not None:  # a state of a batch of 3 continued with a batch of 1: never broadcast
        out = finite_or_rejected(
            lambda: gaussport.solve(G, first.x[:1], GRID[2:], solver, state=first.state, disable=True)
        )
        assert out is None or out.x.shape == (1, DIM)
    # the run itself continues
    out = finite_or_rejected(
        lambda: gaussport.solve(G, first.x, GRID[2:], solver, state=first.state, disable=True)
    )
    assert out is None or out.x.shape == first.x.shape
