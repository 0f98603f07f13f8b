"""The step loop and its contract with solvers: :class:`Solver`, :class:`Step`, :class:`Teleport`.

This is the core every sampler in gaussport runs on (docs/architecture.md). A solver holds
hyper-parameters only; everything that changes during a run (multistep history, pre-computed
coefficients) lives in a state value returned by :meth:`Solver.init` and threaded through
:meth:`Solver.step` by the one loop, :func:`integrate`. Solvers never see the model's
parameterisation: they call a :class:`~gaussport.denoiser.DenoiserCall` with VE state and a float
sigma (docs/conventions.md).

Nothing here knows a particular solver, the analytic Gaussian or an adapter: the public entry
points :func:`gaussport.solve` and :func:`gaussport.sample` (module :mod:`gaussport.sampling`)
resolve solver names, apply the warm start and call :func:`integrate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor
from tqdm.auto import trange

from ._checks import Grid
from .denoiser import DenoiserCall

__all__ = ["Solver", "Step", "Teleport", "StepInfo", "Callback", "integrate", "finish"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Step(Generic[S]):
    """The result of one step from ``sigmas[i]`` to ``sigmas[i + 1]``.

    Attributes:
        x: the state at ``sigmas[i + 1]``.
        denoised: ``D(x, sigmas[i])`` at the start of the step (for callbacks and previews).
        state: the solver state to pass to the next step.
    """

    x: Tensor
    denoised: Tensor
    state: S


@dataclass(frozen=True, slots=True)
class Teleport:
    """The record of an analytic teleport, given to :meth:`Solver.init` of the run that follows it.

    The *warm start* is the model (normally a :class:`gaussport.analytic.Gaussian` fitted to the
    data); the *teleport* is its exact flow from ``sigma_from`` to ``sigma_to``, where the solver
    starts (docs/warm-start.md). Solvers may use the record to seed multistep history with the warm
    start's denoised values at levels above ``sigma_to``.

    Attributes:
        model: the warm start (it has ``flow(x, sigma_from, sigma_to)`` and is a denoiser).
        sigma_from: the level the teleport started at (the caller's ``sigmas[0]``).
        x_from: the state at ``sigma_from``, in solver precision.
        sigma_to: the teleport level, where the solver starts.
    """

    model: Any
    sigma_from: float
    x_from: Tensor
    sigma_to: float


class Solver(ABC, Generic[S]):
    """Base class of every solver: immutable hyper-parameters, explicit per-run state.

    Subclasses are frozen dataclasses registered with :func:`gaussport.solvers.register`. Their
    docstring states the order, the denoiser evaluations per step, the carried state, and the
    reference (paper and algorithm). docs/extending.md shows a complete one.

    Attributes:
        supports_inversion: whether the method is meaningful on an increasing grid (an inversion,
            data to noise: :func:`gaussport.inversion.invert`). ``False`` unless a solver declares
            it; a solver that declares it must handle ``sigmas[i + 1] > sigmas[i]`` in ``step``
            (history lies below the current level then) and converges at its declared orders
            upwards too (tests/solvers/test_inversion_contract.py).
    """

    supports_inversion: ClassVar[bool] = False

    @property
    @abstractmethod
    def order(self) -> int:
        """Global convergence order on smooth problems (measured by the test suite).

        For multistep methods: the order with exact history (seeded from the exact solution);
        :attr:`cold_start_order` is the order of a run starting with empty history.
        """

    @property
    def cold_start_order(self) -> int:
        """Global order of a run that starts with empty history (``init`` without seeding).

        Equal to :attr:`order` for one-step methods. A multistep method warms up with lower-order
        steps, and one step of local error ``O(h^(q+1))`` caps the global order at ``q + 1``
        (docs/devdocs-derivations.md#warm-up-steps-cap-the-global-order), so e.g. a third-order
        method that starts with DDIM converges with order 2 from a cold start. Measured by the
        test suite like :attr:`order`.
        """
        return self.order

    @abstractmethod
    def evaluations(self, sigmas: Grid) -> int:
        """Number of denoiser evaluations a run over ``sigmas`` makes (checked by the test suite)."""

    def init(self, x: Tensor, sigmas: Grid, teleport: Teleport | None = None) -> S:
        """The state for a run over ``sigmas`` starting from ``x`` (``None`` for stateless solvers).

        ``teleport`` is given when the run follows an analytic teleport (:func:`gaussport.sample`).
        The loop passes it positionally.
        """
        return None  # type: ignore[return-value]

    @abstractmethod
    def step(self, denoiser: DenoiserCall, x: Tensor, sigmas: Grid, i: int, state: S) -> Step[S]:
        """Advance ``x`` from ``sigmas[i]`` to ``sigmas[i + 1]``."""


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a callback receives, once per grid interval.

    Attributes:
        i: index of the interval in the grid the caller passed.
        sigma: noise level at the start of the interval.
        sigma_next: noise level at its end.
        x: the state at ``sigma`` (before the step), in solver precision.
        denoised: ``D(x, sigma)``; for intervals covered by the teleport, the warm start's.
        teleported: whether the interval was covered by the analytic teleport (0 evaluations).
    """

    i: int
    sigma: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    teleported: bool = False


Callback = Callable[[StepInfo], None]


def integrate(
    call: DenoiserCall,
    solver: Solver,
    x: Tensor,
    grid: Grid,
    *,
    state: Any = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    index_offset: int = 0,
    teleport: Teleport | None = None,
) -> tuple[Tensor, Any]:
    """The one step loop: thread ``x`` and the solver state through ``solver.step`` over ``grid``.

    Args:
        call: the denoiser behind the cast boundary (it counts evaluations).
        solver: the solver.
        x: the state at ``grid[0]``, in solver precision.
        grid: the levels to integrate, as validated Python floats.
        state: a state from an earlier run to continue (``None``: ``solver.init``).
        callback: called once per interval with a :class:`StepInfo`.
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).
        index_offset: added to the interval index reported to ``callback``.
        teleport: the teleport that preceded the run, for ``solver.init``.

    Returns:
        ``(x, state)`` at ``grid[-1]``.
    """
    if state is None:
        state = solver.init(x, grid, teleport)
    for i in trange(len(grid) - 1, disable=disable, desc=type(solver).__name__, unit="step"):
        step = solver.step(call, x, grid, i, state)
        if callback is not None:
            callback(StepInfo(i + index_offset, grid[i], grid[i + 1], x, step.denoised))
        x, state = step.x, step.state
    return x, state


def finish(x: Tensor, out_dtype: torch.dtype, check_finite: bool) -> Tensor:
    """The result of a run in the caller's dtype; with ``check_finite``, NaN or inf raise.

    One host synchronisation per run, after the loop: a NaN must never pass silently.
    """
    if check_finite and not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            "the solve produced NaN or infinite values: the denoiser returned non-finite outputs "
            "(check the model, its dtype -- float16 overflows above ~65504 -- and its sigma range)."
        )
    return x.to(out_dtype)
