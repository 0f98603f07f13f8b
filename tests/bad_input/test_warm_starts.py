"""Bad warm starts: objects that cannot teleport, Gaussians of another shape, bad flow maps, bad
``sigma_skip`` and ``teleport=`` values, through :func:`gaussport.sample`, :func:`gaussport.invert` and a
k-diffusion drop-in sampler on a real k-diffusion model.

A warm start is a Gaussian, an object with ``flow`` (and ``__call__`` for callbacks) or a statistics file
path (docs/warm-start.md); what its ``flow`` returns is checked as a model's output is; ``sigma_skip``
is one noise level by the grids' rule (a real number, never a string or a bool). Cases:
``len(BAD_WARM_STARTS)`` objects, ``len(BAD_FLOWS)`` flow maps, ``SKIP_EXAMPLES`` generated
``sigma_skip`` values and ``len(BAD_MODES)`` teleport modes, each through the three entry points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import DIM, GRID, UP, tiny_gaussian, tiny_state
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters import k_diffusion as gk
from gaussport.analytic import Gaussian, GaussianMixture
from gaussport.loop import Teleport

G = tiny_gaussian()
X = tiny_state()


def _entry_points(
    k_model: Any, warm_start: Any, sigma_skip: Any = 4.0, x: Tensor = X, **kw: Any
) -> dict[str, Callable[[], Any]]:
    return {
        "sample": lambda: gaussport.sample(
            G, x, GRID, "heun", warm_start=warm_start, sigma_skip=sigma_skip, disable=True, **kw
        ),
        "invert": lambda: gaussport.invert(
            G, x, UP, "heun", warm_start=warm_start, sigma_skip=sigma_skip, disable=True, **kw
        ),
        "k-diffusion": lambda: gk.sample_heun(
            k_model, x, torch.tensor(GRID), warm_start=warm_start, sigma_skip=sigma_skip, disable=True, **kw
        ),
    }


def _files(tmp: Path) -> dict[str, Any]:
    text = tmp / "notes.txt"
    text.write_text("not statistics")
    return {"a directory": str(tmp), "a missing file": str(tmp / "missing.npz"), "a text file": text}


BAD_WARM_STARTS: list[tuple[str, Callable[[], Any]]] = [
    ("a Gaussian of 3 dimensions", lambda: tiny_gaussian(3)),
    ("a Gaussian of shape (2, 1)", lambda: Gaussian(torch.zeros(DIM, 1), torch.eye(DIM))),
    ("a Gaussian of 1 dimension", lambda: tiny_gaussian(1)),
    ("a GaussianMixture (no flow)", lambda: GaussianMixture([G, G.affine(2.0)])),
    ("a Teleport record", lambda: Teleport(G, 10.0, X, 4.0)),
    ("a tensor", lambda: G.mean),
    ("a number", lambda: 4.0),
    ("True", lambda: True),
    ("a dict", lambda: {"mean": G.mean}),
    ("a class", lambda: Gaussian),
    ("flow that is not callable", lambda: type("NotCallable", (), {"flow": 3})()),
]


@pytest.mark.parametrize("label,make", BAD_WARM_STARTS, ids=[label for label, _ in BAD_WARM_STARTS])
def test_a_warm_start_that_cannot_teleport_is_refused(
    label: str, make: Callable[[], Any], k_model: Any
) -> None:
    before = X.clone()
    for where, call in _entry_points(k_model, make()).items():
        exc = rejected(call)
        assert "warm" in str(exc) or "Gaussian" in str(exc), f"{where}: {exc}"
    assert torch.equal(X, before)


def test_a_bad_statistics_path_is_refused(tmp_path: Path, k_model: Any) -> None:
    for label, path in _files(tmp_path).items():
        for where, call in _entry_points(k_model, path).items():
            try:
                rejected(call)
            except AssertionError as exc:
                raise AssertionError(f"{label} through {where}: {exc}") from exc


class _Flow:
    """A warm start with a flow of its own (and the Gaussian's denoiser for callbacks)."""

    shape = (DIM,)

    def __init__(self, flow: Callable[[Tensor, float, float], Any], call: Callable[..., Any] | None = None):
        self._flow, self._call = flow, call or G

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Any:
        return self._flow(x, sigma_from, sigma_to)

    def __call__(self, x: Tensor, sigma: Tensor) -> Any:
        return self._call(x, sigma)


BAD_FLOWS: list[tuple[str, _Flow]] = [
    ("NaN", _Flow(lambda x, a, b: x * float("nan"))),
    ("inf", _Flow(lambda x, a, b: x + float("inf"))),
    ("batch of 1 (broadcastable)", _Flow(lambda x, a, b: x[:1])),
    ("extra dimension", _Flow(lambda x, a, b: x[..., None])),
    ("int64", _Flow(lambda x, a, b: x.long())),
    ("complex", _Flow(lambda x, a, b: x.to(torch.complex64))),
    ("meta", _Flow(lambda x, a, b: torch.empty(x.shape, device="meta"))),
    ("None", _Flow(lambda x, a, b: None)),
    ("numpy", _Flow(lambda x, a, b: x.numpy())),
    ("callback denoiser returns None", _Flow(G.flow, lambda x, s: None)),
    ("callback denoiser returns a batch of 1", _Flow(G.flow, lambda x, s: G(x, s)[:1])),
]


@pytest.mark.parametrize("label,warm", BAD_FLOWS, ids=[label for label, _ in BAD_FLOWS])
def test_a_bad_flow_map_is_refused(label: str, warm: _Flow, k_model: Any) -> None:
    # Callbacks ask the warm start's denoiser for the teleported intervals: checked the same way.
    for where, call in _entry_points(k_model, warm, callback=lambda info: None).items():
        try:
            rejected(call)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc


def test_an_exception_of_the_flow_map_propagates_unchanged(k_model: Any) -> None:
    class FlowError(Exception):
        pass

    def fail(x: Tensor, a: float, b: float) -> Tensor:
        raise FlowError("the flow failed")

    for call in _entry_points(k_model, _Flow(fail)).values():
        with pytest.raises(FlowError):
            call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_warm_start_follows_the_state_dtype(dtype: torch.dtype, k_model: Any) -> None:
    x = tiny_state(dtype=dtype)
    for where, call in _entry_points(k_model, G, x=x).items():
        if where == "k-diffusion" and dtype != torch.float32:
            continue  # the tiny net's weights are float32: the net itself would raise
        out = finite_or_rejected(call)
        assert out is not None
        assert (out if isinstance(out, Tensor) else out.x).dtype == dtype


# ----------------------------------------------------------------------------- sigma_skip and teleport=


def test_sigma_skip_is_a_number_not_a_string_or_a_bool(k_model: Any) -> None:
    # "4" and True used to run as 4.0 and 1.0.
    for bad in ("4", True, np.bool_(True), 4 + 0j, [4.0], torch.tensor([4.0, 1.0])):
        for call in _entry_points(k_model, G, sigma_skip=bad).values():
            exc = rejected(call)
            assert "sigma_skip" in str(exc)


SKIP_EXAMPLES = 40

_skips = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1.0, 12.0),
    st.integers(-(10**400), 10**400),
    st.sampled_from([None, "4", "", True, False, 1j, [4.0], (4.0,), {4.0}, object()]),
    st.floats(0.0, 12.0).map(torch.tensor),
    st.floats(0.0, 12.0).map(np.float32),
    st.floats(0.0, 12.0).map(lambda v: torch.tensor([v, v])),
)


@settings(max_examples=SKIP_EXAMPLES)
@given(skip=_skips)
def test_generated_sigma_skip(skip: Any, k_model: Any) -> None:
    level = (
        float(skip)
        if isinstance(skip, (int, float, np.floating)) and not isinstance(skip, bool) and abs(skip) < 1e300
        else float(skip)
        if isinstance(skip, Tensor) and skip.ndim == 0
        else None
    )
    calls = _entry_points(k_model, G, sigma_skip=skip)
    for where, call in calls.items():
        valid = level is not None and math.isfinite(level) and level >= 0
        if (
            where != "k-diffusion"
        ):  # the k-diffusion samplers take any level >= 0 (above the grid: no teleport)
            valid = valid and 0.3 <= level <= 10.0 if where == "invert" else valid and level <= 10.0
        if valid:
            assert finite_or_rejected(call) is not None, f"{where}: sigma_skip={skip!r} is valid"
        else:
            rejected(call)


BAD_MODES = ["Truncate", "respace ", "", None, 5, G, grids.karras, ("truncate",)]


@pytest.mark.parametrize("mode", BAD_MODES, ids=[repr(m)[:20] for m in BAD_MODES])
def test_an_unknown_teleport_mode_is_refused(mode: Any, k_model: Any) -> None:
    for call in _entry_points(k_model, G, teleport=mode).values():
        rejected(call)


@pytest.mark.parametrize("mode", ["truncate", "respace", grids.KarrasFamily()])
def test_every_teleport_mode_runs(mode: Any, k_model: Any) -> None:
    for call in _entry_points(k_model, G, teleport=mode).values():
        out = finite_or_rejected(call)  # "respace" refuses GRID: it belongs to no family
        assert out is not None or mode == "respace"
