"""Bad grids: every form but the documented ones (docs/conventions.md#grids) is refused by name.

A grid is a 1-D real tensor or NumPy array, or a sequence of real numbers; for ``solve``/``sample`` strictly
decreasing, for ``invert`` strictly increasing from above 0, for the k-diffusion samplers either (with
repeats). The targets: :func:`gaussport.solve`, :func:`gaussport.sample`, :func:`gaussport.invert` and
a k-diffusion drop-in sampler on a real k-diffusion model. Cases: ``len(MALFORMED)`` explicit values
and ``BAD_NUMERIC_EXAMPLES`` generated ones, each through the four entry points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import tiny_gaussian, tiny_state
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport._checks import as_grid, grid_values
from gaussport.adapters import k_diffusion as gk

G = tiny_gaussian()
X = tiny_state()

# (label, factory): a factory, because iterators are one-shot and every entry point needs a fresh one.
MALFORMED: list[tuple[str, Callable[[], Any]]] = [
    ("string '80' (once ran as [8.0, 0.0])", lambda: "80"),
    ("string '80, 0'", lambda: "80, 0"),
    ("empty string", lambda: ""),
    ("bytes", lambda: b"80"),
    ("bytearray", lambda: bytearray(b"P\x00")),
    ("empty list", lambda: []),
    ("empty tuple", lambda: ()),
    ("empty tensor", lambda: torch.empty(0)),
    ("empty array", lambda: np.empty(0)),
    ("nested list", lambda: [[10.0, 0.0]]),
    ("list of 1-D tensors", lambda: [torch.tensor([10.0, 0.0])]),
    ("list of 1-element tensors", lambda: [torch.tensor([10.0]), torch.tensor([0.0])]),
    ("list of arrays", lambda: [np.array([10.0, 0.0])]),
    ("numpy column (n, 1)", lambda: np.array([[10.0], [1.0], [0.0]])),
    ("numpy row (1, n)", lambda: np.array([[10.0, 1.0, 0.0]])),
    ("tensor column (n, 1)", lambda: torch.tensor([[10.0], [0.0]])),
    ("2-D tensor", lambda: torch.ones(2, 2)),
    ("set", lambda: {10.0, 0.0}),
    ("frozenset", lambda: frozenset({10.0, 0.0})),
    ("dict", lambda: {10.0: 0.0}),
    ("iterator", lambda: iter([10.0, 0.0])),
    ("generator", lambda: (s for s in (10.0, 0.0))),
    ("None", lambda: None),
    ("a float", lambda: 10.0),
    ("an int", lambda: 10),
    ("0-d tensor", lambda: torch.tensor(10.0)),
    ("0-d array", lambda: np.array(10.0)),
    ("numpy scalar", lambda: np.float64(10.0)),
    ("complex list", lambda: [10 + 0j, 0j]),
    ("complex tensor", lambda: torch.tensor([10.0, 0.0], dtype=torch.complex64)),
    ("complex array", lambda: np.array([10.0, 0.0], dtype=complex)),
    ("complex 0-d tensors", lambda: [torch.tensor(10 + 0j), torch.tensor(0j)]),
    ("bool list", lambda: [True, False]),
    ("bool tensor", lambda: torch.tensor([True, False])),
    ("bool array", lambda: np.array([True, False])),
    ("numpy bools", lambda: [np.bool_(True), np.bool_(False)]),
    ("bool 0-d tensors", lambda: [torch.tensor(True), torch.tensor(False)]),
    ("list of strings", lambda: ["10", "0"]),
    ("string array", lambda: np.array(["10", "0"])),
    ("object array with None", lambda: np.array([10.0, None], dtype=object)),
    ("None inside", lambda: [10.0, None]),
    ("string inside", lambda: [10.0, "0"]),
    ("too large for a float", lambda: [10**400, 0]),
    ("sparse tensor", lambda: torch.tensor([10.0, 0.0]).to_sparse()),
    ("meta tensor", lambda: torch.tensor([10.0, 0.0], device="meta")),
    ("meta 0-d tensors", lambda: [torch.tensor(10.0, device="meta"), 0.0]),
]


def _entry_points(k_model: Any, grid: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
    return {
        "solve": lambda: gaussport.solve(G, X, grid(), "euler", disable=True),
        "sample": lambda: gaussport.sample(G, X, grid(), "euler", warm_start=G, sigma_skip=1.0, disable=True),
        "invert": lambda: gaussport.invert(G, X, grid(), "euler", disable=True),
        "k-diffusion": lambda: gk.sample_euler(k_model, X, grid(), disable=True),
    }


@pytest.mark.parametrize("label,grid", MALFORMED, ids=[label for label, _ in MALFORMED])
def test_a_malformed_grid_is_refused_everywhere(label: str, grid: Callable[[], Any], k_model: Any) -> None:
    x_before = X.clone()
    for where, call in _entry_points(k_model, grid).items():
        exc = rejected(call)
        assert "sigmas" in str(exc), f"{where}: the message must name the argument: {exc}"
    assert torch.equal(X, x_before)


def test_a_string_grid_is_refused_not_read_digit_by_digit() -> None:
    # Issue 12, item 6: the string "80" ran as the grid [8.0, 0.0].
    with pytest.raises(TypeError, match="sigmas must be a 1-D tensor or a sequence of floats"):
        gaussport.solve(G, X, "80", "euler", disable=True)
    with pytest.raises(TypeError, match="not a real number"):
        as_grid(["80", "0"])


def test_a_numpy_column_is_refused() -> None:
    # Issue 12, item 6: a numpy (n, 1) array was accepted (each row read as its one element).
    with pytest.raises(ValueError, match=r"1-D tensor or array of noise levels; got shape \(3, 1\)"):
        gaussport.solve(G, X, np.array([[10.0], [1.0], [0.0]]), "euler", disable=True)
    with pytest.raises(ValueError, match="not nested"):
        as_grid([np.array([10.0]), np.array([0.0])])


def test_booleans_sets_and_one_shot_iterables_are_refused() -> None:
    for grid in ([True, False], torch.tensor([True, False]), {10.0, 0.0}, iter([10.0, 0.0])):
        with pytest.raises(TypeError):
            as_grid(grid)


# ----------------------------------------------------------------------------- the documented forms


def _forms(levels: list[float]) -> list[Any]:
    return [
        levels,
        tuple(levels),
        torch.tensor(levels, dtype=torch.float64),
        np.array(levels),
        [torch.tensor(v, dtype=torch.float64) for v in levels],
        [np.float64(v) for v in levels],
    ]


@settings(max_examples=20)
@given(st.lists(st.floats(0.0, 100.0, width=32), min_size=1, max_size=6, unique=True))
def test_every_documented_form_gives_the_same_grid(levels: list[float]) -> None:
    levels = sorted(levels, reverse=True)
    for form in _forms(levels):
        assert as_grid(form) == tuple(levels)
    assert as_grid(torch.tensor(levels, dtype=torch.float32)) == tuple(
        float(v) for v in torch.tensor(levels, dtype=torch.float32)
    )
    assert as_grid(torch.tensor([3, 2, 0])) == (3.0, 2.0, 0.0)  # integer tensors are real levels
    assert grid_values([np.float32(2.5), np.int64(1)]) == [2.5, 1.0]
    assert as_grid(range(3, -1, -1)) == (3.0, 2.0, 1.0, 0.0)  # any sequence


def test_scalar_levels_follow_the_grid_rule() -> None:
    from gaussport._checks import noise_level

    assert (
        noise_level(torch.tensor(2.5)) == 2.5
        and noise_level(np.float32(0.5)) == 0.5
        and noise_level(3) == 3.0
    )
    for bad in (
        "5",
        True,
        np.bool_(False),
        1 + 0j,
        None,
        [5.0],
        torch.tensor([5.0]),
        math.nan,
        -1.0,
        math.inf,
    ):
        rejected(lambda bad=bad: noise_level(bad))


# ----------------------------------------------------------------------------- generated bad levels

BAD_NUMERIC_EXAMPLES = 40

_levels = st.floats(0.0, 100.0, allow_nan=False)
_not_decreasing = st.lists(_levels, min_size=2, max_size=5).filter(
    lambda v: any(b >= a for a, b in zip(v, v[1:], strict=False))
)
_poisoned = st.tuples(
    st.lists(_levels, min_size=1, max_size=4, unique=True).map(lambda v: sorted(v, reverse=True)),
    st.integers(0, 4),
    # -1e-30, not -1e-300: the latter rounds to -0.0 in float32, a valid level.
    st.sampled_from([-1e-30, -0.5, -80.0, math.nan, math.inf, -math.inf]),
).map(lambda t: t[0][: t[1]] + [t[2]] + t[0][t[1] :])
_containers = st.sampled_from(
    [
        list,
        tuple,
        lambda v: torch.tensor(v, dtype=torch.float32),
        lambda v: torch.tensor(v, dtype=torch.float64),
        np.array,
        lambda v: [torch.tensor(s) for s in v],
        lambda v: [np.float32(s) for s in v],
    ]
)


@settings(max_examples=BAD_NUMERIC_EXAMPLES)
@given(levels=st.one_of(_not_decreasing, _poisoned), container=_containers)
def test_generated_bad_levels(
    levels: list[float], container: Callable[[list[float]], Any], k_model: Any
) -> None:
    # Rounding to float32 is monotone: a non-decreasing list stays one, a poisoned level stays bad.
    calls = _entry_points(k_model, lambda: container(levels))
    poisoned = any(not (math.isfinite(s) and s >= 0) for s in levels)
    rejected(calls["solve"])
    rejected(calls["sample"])
    if poisoned:
        rejected(calls["invert"])
        rejected(calls["k-diffusion"])
    else:  # increasing ones invert, and k-diffusion samplers take repeats and increasing sigmas
        finite_or_rejected(calls["invert"])
        finite_or_rejected(calls["k-diffusion"])
