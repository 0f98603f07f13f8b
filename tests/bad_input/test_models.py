"""Bad models: denoisers returning NaN, inf, the wrong shape, dtype or device, non-tensors, or raising.

Every registered solver, through :func:`gaussport.solve`, :func:`gaussport.sample` (Gaussian warm start)
and, for the solvers that invert, :func:`gaussport.invert`; and a k-diffusion drop-in sampler on real
k-diffusion model wrappers around bad tiny nets. A bad output is refused by name (the shape, dtype
and device when it is returned, the values once per run, on the result); an exception the model
raises propagates unchanged, the very object (gaussport neither wraps nor hides it). Cases:
``len(BAD_MODELS)`` models x every solver x 2-3 entry points, ``len(K_BAD)`` k-diffusion nets,
``len(RAISING)`` raising models x every solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import DIM, GRID, UP, eps_model, tiny_gaussian, tiny_state
from torch import Tensor

import gaussport
from gaussport.adapters import k_diffusion as gk

G = tiny_gaussian()
SOLVERS = gaussport.solvers.available()
INVERTING = set(gaussport.solvers.available(inversion=True))


def _nan_below(level: float) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda x, s: torch.where(s[:, None] < level, float("nan"), 0.5 * x)


BAD_MODELS: list[tuple[str, Callable[[Tensor, Tensor], Any]]] = [
    ("NaN", lambda x, s: x * float("nan")),
    ("one NaN", lambda x, s: torch.cat([x[:1] * float("nan"), 0.5 * x[1:]])),
    ("NaN late (sigma < 1)", _nan_below(1.0)),
    # every run evaluates at sigma = 4 (the teleport level, or the inversion's last step start)
    ("NaN early (sigma >= 4)", lambda x, s: torch.where(s[:, None] > 3.9, float("nan"), 0.5 * x)),
    ("inf", lambda x, s: x + float("inf")),
    ("-inf", lambda x, s: x - float("inf")),
    ("batch of 1 (broadcastable)", lambda x, s: x[:1]),
    ("extra dimension", lambda x, s: x[..., None]),
    ("flattened", lambda x, s: x.reshape(-1)),
    ("one more feature", lambda x, s: torch.zeros(x.shape[0], DIM + 1)),
    ("0-d", lambda x, s: x.sum()),
    ("int64", lambda x, s: x.long()),
    ("bool", lambda x, s: x > 0),
    ("complex", lambda x, s: x.to(torch.complex64)),
    ("meta device", lambda x, s: torch.empty(x.shape, device="meta")),
    ("None", lambda x, s: None),
    ("numpy array", lambda x, s: x.numpy()),
    ("list", lambda x, s: x.tolist()),
    ("tuple of a tensor", lambda x, s: (x,)),
    ("float", lambda x, s: 0.0),
    ("dict", lambda x, s: {"sample": x}),
]


def _entry_points(model: Any, solver: str, x: Tensor) -> dict[str, Callable[[], Any]]:
    calls = {
        "solve": lambda: gaussport.solve(model, x, GRID, solver, disable=True),
        "sample": lambda: gaussport.sample(
            model, x, GRID, solver, warm_start=G, sigma_skip=4.0, disable=True
        ),
    }
    if solver in INVERTING:
        calls["invert"] = lambda: gaussport.invert(model, x, UP, solver, disable=True)
    return calls


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_bad_model_output_is_refused(solver: str) -> None:
    x = tiny_state()
    before = x.clone()
    for label, model in BAD_MODELS:
        for where, call in _entry_points(model, solver, x).items():
            try:
                rejected(call)
            except AssertionError as exc:
                raise AssertionError(f"{label} through {where}: {exc}") from exc
    assert torch.equal(x, before)


@pytest.mark.parametrize("solver", SOLVERS)
def test_other_float_dtypes_and_huge_values(solver: str) -> None:
    # A model may compute in another float dtype (its output is cast to the solver's), and return
    # values near float32's limit: the run either raises or returns finite values.
    x = tiny_state()
    models = [
        lambda x, s, dtype=dtype: G(x, s).to(dtype)
        for dtype in (torch.float16, torch.bfloat16, torch.float64)
    ]
    models.append(lambda x, s: torch.full_like(x, 3e38))
    for model in models:
        for call in _entry_points(model, solver, x).values():
            out = finite_or_rejected(call)
            assert out is None or out.x.dtype == x.dtype


class ModelError(Exception):
    """An error of the model's own: it must reach the caller as it is."""


def _raise(kind: type[BaseException]) -> Callable[[Tensor, Tensor], Tensor]:
    def model(x: Tensor, s: Tensor) -> Tensor:
        if float(s[0]) < 5.0:  # after a few evaluations: mid-run
            raise kind("the model failed")
        return G(x, s)

    return model


RAISING = [ModelError, RuntimeError, KeyError, ValueError, MemoryError]


@pytest.mark.parametrize("solver", SOLVERS)
def test_an_exception_of_the_model_propagates_unchanged(solver: str) -> None:
    x = tiny_state()
    before = x.clone()
    for kind in RAISING:
        for call in _entry_points(_raise(kind), solver, x).values():
            with pytest.raises(kind, match="the model failed") as info:
                call()
            assert type(info.value) is kind
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------- k-diffusion models


class _Net(torch.nn.Module):
    """A k-diffusion inner model ``(x, t) -> eps`` computing ``fn(x, t)``."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, t: Tensor) -> Any:
        return self.fn(x, t)


K_BAD: list[tuple[str, Callable[[Tensor, Tensor], Any]]] = [
    ("NaN eps", lambda x, t: x * float("nan")),
    ("NaN eps late", lambda x, t: torch.where(t[:, None] < 200, float("nan"), x)),
    ("inf eps", lambda x, t: x + float("inf")),
    ("complex eps", lambda x, t: x.to(torch.complex64)),
    ("None eps", lambda x, t: None),  # the wrapper's own TypeError (input + None * c_out)
    ("numpy eps", lambda x, t: np.zeros(tuple(x.shape), dtype=np.float32)),
]


@pytest.mark.parametrize("label,fn", K_BAD, ids=[label for label, _ in K_BAD])
def test_a_bad_k_diffusion_model_is_refused(label: str, fn: Callable[..., Any], k_diffusion: Any) -> None:
    model = eps_model(k_diffusion, _Net(fn))
    x = tiny_state()
    before = x.clone()
    sigmas = torch.tensor([10.0, 4.0, 1.0, 0.3, 0.0])
    rejected(lambda: gk.sample_dpmpp_2m(model, x, sigmas, disable=True))
    rejected(lambda: gk.sample_heun(model, x, sigmas, warm_start=G, sigma_skip=4.0, disable=True))
    rejected(lambda: gk.sample_euler(model, x, sigmas.flip(0)[1:], disable=True))  # an inversion
    assert torch.equal(x, before)


def test_an_exception_of_a_k_diffusion_model_propagates_unchanged(k_diffusion: Any) -> None:
    def fail(x: Tensor, t: Tensor) -> Tensor:
        raise ModelError("the model failed")

    with pytest.raises(ModelError, match="the model failed"):
        gk.sample_euler(eps_model(k_diffusion, _Net(fail)), tiny_state(), [10.0, 1.0, 0.0], disable=True)
