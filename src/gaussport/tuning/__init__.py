"""Where to teleport and how to step, decided for the user.

* :mod:`gaussport.tuning.probes` -- the warm start's velocity error per noise level (model calls on
  probes, no sampling), cached per (model, statistics) in a small file;
* :mod:`gaussport.tuning.auto` -- ``sigma_skip="auto"``: the teleport level for a solver, grid and
  budget from the probes, without a reference solve;
* :mod:`gaussport.tuning.recipe` -- tuned sampling recipes (teleport level and free grid per solver
  and NFE, optimised on reference trajectories), their JSON file and :func:`tune`.
"""

from __future__ import annotations

__all__: list[str] = []
