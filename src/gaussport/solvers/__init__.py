"""Probability-flow-ODE solvers behind one denoiser protocol.

Every module in this package is imported here, so a new solver is one file with a
:func:`register`-ed class. ``available()`` lists them; ``get(name, **options)`` builds one.
"""

from __future__ import annotations

import importlib
import pkgutil

from .. import _deprecation
from .base import History, SingleEvaluationSolver, Solver, StatisticsSolver, Step, Teleport, TwoStageSolver
from .registry import available, get, register, solver_class, summary, unregister

__all__ = [
    "History",
    "SingleEvaluationSolver",
    "Solver",
    "StatisticsSolver",
    "Step",
    "Teleport",
    "TwoStageSolver",
    "available",
    "get",
    "register",
    "solver_class",
    "summary",
    "unregister",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name not in {"base", "registry"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__getattr__ = _deprecation.module_aliases(
    __name__, {"WarmStart": ("gaussport.solvers.Teleport (the record of a teleport)", lambda: Teleport)}
)
