"""What the harness returns: a grid for a budget, one measured configuration, a calibration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .._checks import Grid
from ..metrics import FrechetSummary, TrajectoryError

__all__ = ["Budget", "Evaluation", "Calibration"]


@dataclass(frozen=True)
class Budget:
    """A grid for an NFE budget.

    Attributes:
        grid: the caller's grid (from ``sigma_max``), what :func:`gaussport.sample` receives.
        solver_grid: what the solver integrates (``grid`` itself without a teleport).
        nfe: the evaluations the solver makes on ``solver_grid`` (at most the budget).
    """

    grid: Grid
    solver_grid: Grid
    nfe: int


@dataclass(frozen=True)
class Evaluation:
    """One solver configuration at one budget, measured on the evaluator's seeds.

    Attributes:
        label: a display name (the solver name unless given).
        solver: the registered solver name, or ``None`` for an external sampler.
        options: the solver options used.
        teleport: ``"none"``, ``"respace"``, ``"truncate"`` or ``"recipe"`` (a tuned recipe's
            entry: :meth:`~gaussport.evaluation.Evaluator.evaluate_recipe`).
        sigma_skip: the teleport level (``None`` without a teleport).
        nfe_budget: the requested budget (the NFE used, for a run on a given number of ``steps``).
        nfe: the evaluations actually made per sample.
        grid: the grid the solver integrated.
        trajectory: distance to the exact endpoints of the same seeds.
        frechet: Frechet distance over the evaluator's Frechet seeds, if requested.
        samples: the final samples of the seeds (CPU, float32).
        seconds: wall time of the sampling (reference solves excluded).
    """

    label: str
    solver: str | None
    options: dict[str, Any]
    teleport: str
    sigma_skip: float | None
    nfe_budget: int
    nfe: int
    grid: Grid
    trajectory: TrajectoryError
    frechet: FrechetSummary | None = None
    samples: Tensor | None = field(default=None, repr=False)
    seconds: float = 0.0

    @property
    def error(self) -> float:
        """The trajectory error: RMS over samples and coordinates of ``x - x_exact``."""
        return self.trajectory.rms

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable record (no tensors)."""
        return {
            "label": self.label,
            "solver": self.solver,
            "options": {k: v for k, v in self.options.items() if k != "ems"},
            "teleport": self.teleport,
            "sigma_skip": self.sigma_skip,
            "nfe_budget": self.nfe_budget,
            "nfe": self.nfe,
            "grid": list(self.grid),
            "trajectory_rms": self.trajectory.rms,
            "trajectory_mean": self.trajectory.mean,
            "trajectory_max": self.trajectory.max,
            "frechet": None if self.frechet is None else list(self.frechet.values),
            "frechet_mean": None if self.frechet is None else self.frechet.mean,
            "frechet_std": None if self.frechet is None else self.frechet.std,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Calibration:
    """The teleport level with the lowest trajectory error among candidates, on calibration seeds.

    Attributes:
        best: the chosen level.
        errors: trajectory error (RMS) per candidate level.
    """

    best: float
    errors: dict[float, float]
