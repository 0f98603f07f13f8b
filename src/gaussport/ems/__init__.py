"""Empirical model statistics (EMS) for DPM-Solver-v3: the value object and its three sources.

DPM-Solver-v3 (Zheng et al., NeurIPS 2023) rewrites the probability-flow ODE with three
per-dimension curves ``l, s, b`` over ``lambda = -log sigma`` that make its Taylor expansions as
accurate as possible. gaussport provides them from three sources:

* :func:`analytic_ems` -- exact, in closed form, from a Gaussian (the one
  teleportation already fits): seconds instead of GPU-hours (docs/ems.md has the derivation);
* :func:`estimate_ems` / :class:`EMSEstimator` -- the paper's Monte-Carlo procedure for any
  denoiser (forward-mode JVPs, streaming, resumable, device-agnostic);
* :meth:`EMS.degenerate` -- ``l = 1, s = b = 0``, with which DPM-Solver-v3 is DPM-Solver++.

:func:`revert_above` and :func:`degenerate_like` are the two transforms of DPM-Solver-v3's guard for
statistics built from a warm start (docs/ems.md#the-guard).

The solver is ``gaussport.solvers.get("dpm_solver_v3", ems=...)``; it never builds statistics
itself: ``gaussport.sample(..., warm_start=gaussian)`` gives it the Gaussian's analytic EMS
(:func:`gaussport.sampling.with_warm_start_statistics`). This package needs nothing of
:mod:`gaussport.analytic`: a Gaussian's covariance supplies its spectrum (``spectral_weights``).
"""

from ._statistics import EMS, Coefficients, StepCoefficients
from .analytic import analytic_ems
from .estimate import EMSEstimator, estimate_ems
from .guard import degenerate_like, revert_above

__all__ = [
    "EMS",
    "Coefficients",
    "StepCoefficients",
    "EMSEstimator",
    "analytic_ems",
    "estimate_ems",
    "degenerate_like",
    "revert_above",
]
