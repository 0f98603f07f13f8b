"""Solver abstractions: immutable solvers, explicit state, one step loop (in ``gaussport.solve``).

A solver holds hyper-parameters only. Everything that changes during a run (multistep history,
pre-computed coefficients) lives in a state value returned by :meth:`Solver.init` and threaded
through :meth:`Solver.step` by the single loop in :func:`gaussport.solve`. Solvers never see the
model's parameterisation: they call a :class:`~gaussport.denoiser.DenoiserCall` with VE state and a
float sigma (docs/conventions.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import Tensor

from .._checks import Grid
from ..denoiser import DenoiserCall

__all__ = ["Solver", "SingleEvaluationSolver", "TwoStageSolver", "Step", "History", "WarmStart"]

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
class WarmStart:
    """What :func:`gaussport.sample` tells a solver about the analytic warm start before a run.

    Solvers may use it in :meth:`Solver.init`, e.g. to seed multistep history with the Gaussian's
    denoised values at levels above the teleport, or to build statistics from the Gaussian.

    Attributes:
        model: the warm-start model (normally a :class:`gaussport.analytic.Gaussian`; it has
            ``flow(x, sigma_from, sigma_to)`` and is a denoiser).
        sigma_from: the level the teleport started at (the caller's ``sigmas[0]``).
        x_from: the state at ``sigma_from``, in solver precision.
        sigma_to: the teleport level, where the solver starts.
    """

    model: Any
    sigma_from: float
    x_from: Tensor
    sigma_to: float


@dataclass(frozen=True, slots=True)
class History:
    """Denoised values at earlier noise levels, most recent last (multistep solvers).

    Attributes:
        sigmas: the noise levels of the stored evaluations, as Python floats.
        denoised: ``D(x_j, sigma_j)`` for each stored level.
    """

    sigmas: tuple[float, ...] = ()
    denoised: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sigmas) != len(self.denoised):
            raise ValueError(
                f"History needs one denoised tensor per sigma; got {len(self.sigmas)} sigmas and "
                f"{len(self.denoised)} tensors."
            )

    def push(self, sigma: float, denoised: Tensor, keep: int) -> History:
        """A new history with ``(sigma, denoised)`` appended, keeping the last ``keep`` entries."""
        if keep <= 0:
            return History()
        return History((self.sigmas + (sigma,))[-keep:], (self.denoised + (denoised,))[-keep:])

    def last(self, count: int) -> list[tuple[float, Tensor]]:
        """The newest ``count`` entries as ``(sigma, denoised)`` pairs, oldest first."""
        if count <= 0:
            return []
        return list(zip(self.sigmas[-count:], self.denoised[-count:], strict=True))

    def __len__(self) -> int:
        return len(self.sigmas)


class Solver(ABC, Generic[S]):
    """Base class of every solver: immutable hyper-parameters, explicit per-run state.

    Subclasses are frozen dataclasses registered with :func:`gaussport.solvers.register`. Their
    docstring states the order, the denoiser evaluations per step, the carried state, and the
    reference (paper and algorithm).
    """

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
        (solvers.md §6.2), so e.g. a third-order method that starts with DDIM converges with order 2
        from a cold start. Measured by the test suite like :attr:`order`.
        """
        return self.order

    @abstractmethod
    def evaluations(self, sigmas: Grid) -> int:
        """Number of denoiser evaluations a run over ``sigmas`` makes (checked by the test suite)."""

    def init(self, x: Tensor, sigmas: Grid, warm_start: WarmStart | None = None) -> S:
        """The state for a run over ``sigmas`` starting from ``x`` (``None`` for stateless solvers).

        ``warm_start`` is given when the run follows an analytic teleport (:func:`gaussport.sample`).
        """
        return None  # type: ignore[return-value]

    @abstractmethod
    def step(self, denoiser: DenoiserCall, x: Tensor, sigmas: Grid, i: int, state: S) -> Step[S]:
        """Advance ``x`` from ``sigmas[i]`` to ``sigmas[i + 1]``."""


class SingleEvaluationSolver(Solver[S]):
    """A solver that evaluates the denoiser exactly once per step, at the step's start.

    Subclasses implement :meth:`advance`, a pure zero-evaluation update. A step to ``sigma = 0``
    is ``x = D(x, sigma)``: the exact limit of every first-order update (Euler in sigma, DDIM in
    lambda), whereas higher-order terms in ``lambda = -log sigma`` diverge there. It costs no
    extra evaluation, and the state is not advanced because nothing can follow it.
    """

    def evaluations(self, sigmas: Grid) -> int:
        return len(sigmas) - 1

    def step(self, denoiser: DenoiserCall, x: Tensor, sigmas: Grid, i: int, state: S) -> Step[S]:
        denoised = denoiser(x, sigmas[i])
        if sigmas[i + 1] == 0.0:
            return Step(denoised, denoised, state)
        x_next, state = self.advance(x, denoised, sigmas, i, state)
        return Step(x_next, denoised, state)

    @abstractmethod
    def advance(self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: S) -> tuple[Tensor, S]:
        """The update from ``sigmas[i]`` to ``sigmas[i + 1] > 0`` given ``denoised = D(x, sigmas[i])``."""


class TwoStageSolver(Solver[None]):
    """A stateless solver with two denoiser evaluations per step (Heun, DPM-Solver++(2S), ...).

    The first evaluation is at the step's start; subclasses implement :meth:`second_stage`, which
    makes the second one. A step to ``sigma = 0`` is ``x = D(x, sigma)`` alone (the second stage
    would evaluate at 0), so ``n`` intervals ending in 0 cost ``2n - 1`` evaluations.
    """

    def evaluations(self, sigmas: Grid) -> int:
        steps = len(sigmas) - 1
        return 2 * steps - (1 if steps and sigmas[-1] == 0.0 else 0)

    def step(self, denoiser: DenoiserCall, x: Tensor, sigmas: Grid, i: int, state: None) -> Step[None]:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma)
        if sigma_next == 0.0:
            return Step(denoised, denoised, None)
        return Step(self.second_stage(denoiser, x, denoised, sigma, sigma_next), denoised, None)

    @abstractmethod
    def second_stage(
        self, denoiser: DenoiserCall, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float
    ) -> Tensor:
        """The state at ``sigma_next > 0`` given ``denoised = D(x, sigma)``; one more evaluation."""


def options_of(solver: Any) -> dict[str, Any]:
    """The hyper-parameters of a dataclass solver, for reprs and error messages."""
    fields = getattr(solver, "__dataclass_fields__", {})
    return {name: getattr(solver, name) for name in fields}
