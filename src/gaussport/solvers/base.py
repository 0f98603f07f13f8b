"""Building blocks of the solver families: one-evaluation and two-stage steps, multistep history.

The contract every solver fulfils (:class:`Solver`, :class:`Step`, :class:`Teleport`) lives with
the step loop in :mod:`gaussport.loop` and is re-exported here; this module adds what several
solver families share. A solver holds hyper-parameters only; its state is threaded through the
loop explicitly (docs/architecture.md).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor

from .._checks import Grid
from ..denoiser import DenoiserCall
from ..loop import Solver, Step, Teleport

__all__ = [
    "Solver",
    "SingleEvaluationSolver",
    "TwoStageSolver",
    "StatisticsSolver",
    "Step",
    "History",
    "Teleport",
    "options_of",
]

S = TypeVar("S")


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
        x_next, state = self.update(x, denoised, sigmas, i, state)
        return Step(x_next, denoised, state)

    def update(self, x: Tensor, denoised: Tensor, sigmas: Grid, i: int, state: S) -> tuple[Tensor, S]:
        """The zero-evaluation update from ``sigmas[i]`` to ``sigmas[i + 1]`` given ``D(x, sigmas[i])``.

        The one place of the rule "a step to sigma = 0 is ``x = D``" (the state is returned
        unchanged there); otherwise :meth:`advance`. Callers that evaluate the model themselves (the
        diffusers scheduler) use this instead of :meth:`step`.
        """
        if sigmas[i + 1] == 0.0:
            return denoised, state
        return self.advance(x, denoised, sigmas, i, state)

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


class StatisticsSolver(SingleEvaluationSolver[S]):
    """A single-evaluation solver parameterised by empirical model statistics (DPM-Solver-v3).

    Subclasses are dataclasses with the fields ``ems`` (a :class:`gaussport.ems.EMS`, ``None`` or
    ``"degenerate"``; declared as such, so the type check of every solver field refuses anything
    else when the solver is built) and ``ems_intervals``. A solver never builds statistics from a model: with
    ``ems=None`` the sampling layer supplies them -- :func:`gaussport.sample` (and the evaluation
    harness) the analytic EMS of the warm-start Gaussian over the run's levels
    (:func:`gaussport.sampling.with_warm_start_statistics`), and a run without a Gaussian uses the
    degenerate EMS.
    """

    ems: Any
    ems_intervals: int
