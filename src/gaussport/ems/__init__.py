"""Empirical model statistics (EMS) for DPM-Solver-v3: the value object and its three sources.

DPM-Solver-v3 (Zheng et al., NeurIPS 2023) rewrites the probability-flow ODE with three
per-dimension curves ``l, s, b`` over ``lambda = -log sigma`` that make its Taylor expansions as
accurate as possible. gaussport provides them from three sources:

* :func:`analytic_ems` / :meth:`EMS.analytic` -- exact, in closed form, from a Gaussian (the one
  teleportation already fits): seconds instead of GPU-hours (docs/ems.md has the derivation);
* :func:`estimate_ems` / :class:`EMSEstimator` -- the paper's Monte-Carlo procedure for any
  denoiser (forward-mode JVPs, streaming, resumable, device-agnostic);
* :meth:`EMS.degenerate` -- ``l = 1, s = b = 0``, with which DPM-Solver-v3 is DPM-Solver++.

The solver is ``gaussport.solvers.get("dpm_solver_v3", ems=...)``; with
``gaussport.sample(..., warm_start=gaussian)`` it builds analytic EMS by itself.
"""

from ._statistics import EMS, Coefficients, StepCoefficients
from .analytic import analytic_ems
from .estimate import EMSEstimator, estimate_ems

__all__ = ["EMS", "Coefficients", "StepCoefficients", "EMSEstimator", "analytic_ems", "estimate_ems"]
