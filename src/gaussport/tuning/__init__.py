"""Where to teleport and how to step, decided for the user.

* :mod:`gaussport.tuning.probes` -- the warm start's velocity error per noise level (model calls on
  probes, no sampling), cached per (model, statistics) in a small file;
* :mod:`gaussport.tuning.auto` -- ``sigma_skip="auto"``: the teleport level for a solver, grid and
  budget from the probes, without a reference solve;
* :mod:`gaussport.tuning.recipe` -- tuned sampling recipes (teleport level and free grid per solver
  and NFE, optimised on reference trajectories) and their JSON file;
* :mod:`gaussport.tuning.tune` -- :func:`tune`, which makes a recipe.
"""

from __future__ import annotations

from .auto import auto_sigma_skip
from .probes import ProbeRecord, Surrogate, fit_surrogate, probe, velocity_error
from .recipe import Recipe, RecipeEntry, load_recipe
from .tune import tune

__all__ = [
    "ProbeRecord",
    "Recipe",
    "RecipeEntry",
    "Surrogate",
    "auto_sigma_skip",
    "fit_surrogate",
    "load_recipe",
    "probe",
    "tune",
    "velocity_error",
]
