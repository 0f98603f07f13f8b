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

import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor
from tqdm.auto import trange

from ._checks import Grid
from ._options import check_options
from .denoiser import DenoiserCall

__all__ = ["Solver", "Step", "Teleport", "StepInfo", "Callback", "integrate", "finish", "check_options"]

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

    Every field is checked against its declared type when the solver is built
    (:func:`check_options`, the one place of that rule): ``bool`` takes only ``True``/``False``,
    ``int`` refuses bools and floats, ``float`` refuses bools and NaN/inf, ``Literal[...]`` only
    its values, ``X | None`` also ``None``. A subclass needs no code for it; its own
    ``__post_init__``, if any, adds the rules a type cannot say (ranges) and runs after the check.

    Attributes:
        supports_inversion: whether the method is meaningful on an increasing grid (an inversion,
            data to noise: :func:`gaussport.inversion.invert`). ``False`` unless a solver declares
            it; a solver that declares it must handle ``sigmas[i + 1] > sigmas[i]`` in ``step``
            (history lies below the current level then) and converges at its declared orders
            upwards too (tests/solvers/test_inversion_contract.py).
    """

    supports_inversion: ClassVar[bool] = False
    option_hints: ClassVar[dict[str, str]] = {}
    """Extra advice per option, appended to the type-check message (e.g. a reference's spelling)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_checks_options", False):
            # The subclass's own __post_init__ hides the one below: run the type check first anyway.
            def __post_init__(self: Solver, *args: Any, **kwargs: Any) -> None:
                check_options(self)
                own(self, *args, **kwargs)

            __post_init__._checks_options = True  # type: ignore[attr-defined]
            __post_init__.__doc__ = own.__doc__
            cls.__post_init__ = __post_init__  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        check_options(self)

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


def declared_state(cls: type) -> type | None:
    """The state type a solver class declares as ``Solver[S]`` (through any base), or ``None`` if unknown.

    Read from the generic bases, so checking a continued ``state=`` costs no ``init``.
    """
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Solver) and typing.get_args(base):
                declared = typing.get_args(base)[0]
                if declared is None:
                    return type(None)
                return declared if isinstance(declared, type) else None  # a TypeVar: not declared
    return None


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
    elif (declared := declared_state(type(solver))) is not None and not isinstance(state, declared):
        # A state of another solver (or none at all) fails deep inside a step, or is ignored.
        carried = "no state" if declared is type(None) else f"a {declared.__name__}"
        raise TypeError(
            f"state is a {type(state).__name__}, but {type(solver).__name__} carries {carried} between "
            "steps; pass the Solution.state of a run of the same solver (or state=None to start fresh)."
        )
    shape = x.shape
    for i in trange(len(grid) - 1, disable=disable, desc=type(solver).__name__, unit="step"):
        step = solver.step(call, x, grid, i, state)
        if callback is not None:
            callback(StepInfo(i + index_offset, grid[i], grid[i + 1], x, step.denoised))
        x, state = step.x, step.state
    if x.shape != shape:  # broadcasting against a continued state of another batch
        raise ValueError(
            f"the run changed the state's shape from {tuple(shape)} to {tuple(x.shape)}: state= comes "
            "from a run with another batch or sample shape; continue a run with the same x shape."
        )
    return x, state


def finish(x: Tensor, out_dtype: torch.dtype, check_finite: bool) -> Tensor:
    """The result of a run in the caller's dtype; with ``check_finite``, NaN or inf raise.

    The check runs on what is returned, after the cast: a result that is finite in solver precision
    but overflows the caller's dtype (float16 above 65504) raises too. One host synchronisation per
    run, after the loop (two on the error path, to name the cause): a NaN never passes silently.

    Raises:
        FloatingPointError: if ``check_finite`` and the result is not finite.
    """
    out = x.to(out_dtype)
    if check_finite and not bool(torch.isfinite(out).all()):
        if out.dtype != x.dtype and bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                f"the result is finite in {x.dtype} but overflows the input's dtype {out_dtype} (largest "
                f"finite value {torch.finfo(out_dtype).max:g}); pass x as float32 (x.float()) to get it."
            )
        raise FloatingPointError(
            "the solve produced NaN or infinite values: the denoiser returned non-finite outputs "
            "(check the model, its dtype -- float16 overflows above ~65504 -- and its sigma range)."
        )
    return out
