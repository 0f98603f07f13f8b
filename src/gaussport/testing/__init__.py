"""A property-based test kit for PF-ODE solvers: hypothesis strategies, exact problems, contracts.

gaussport's own test suite runs these checks over every registered solver; anyone adding a solver
(here or in another library) can run the same suite::

    from gaussport.testing import check_solver
    check_solver(MySolver())            # raises AssertionError naming the broken contract

The exact oracle is the closed-form Gaussian flow (:meth:`gaussport.analytic.Gaussian.flow`), so
no expected value comes from the code under test. Importing this module needs ``hypothesis``
(``pip install gaussport[test]``).

Modules: :mod:`~gaussport.testing.strategies` (hypothesis strategies),
:mod:`~gaussport.testing.problems` (exact problems, exact history, measured orders),
:mod:`~gaussport.testing.contracts` (the contracts); every public name is re-exported here.

Contracts (each a function, :func:`check_solver` runs them all):

* :func:`check_constant_exact` -- a constant denoiser ``D = c`` has the exact solution
  ``x(sigma) = c + (x0 - c) sigma / sigma0``, reproduced to round-off by every consistent solver;
* :func:`check_batch_independent` -- a batch gives the same rows as its rows solved one by one;
* :func:`check_dtypes` -- float16/bfloat16/float32/float64 inputs give outputs of the same dtype;
* :func:`check_nfe` -- the evaluations made equal ``solver.evaluations(grid)``;
* :func:`check_rng_untouched` -- deterministic solvers leave the global RNG state alone;
* :func:`check_start_anywhere` -- a run can start at any sigma and converges from there;
* :func:`check_order` -- the measured global order matches the declared ``solver.order`` (with
  exact history, for solvers that can seed it) and ``solver.cold_start_order`` (empty history).

Multistep solvers are measured twice. *Exact history* means the earlier denoised values a multistep
method combines are the exact ones on the solution path: solvers with a ``seed_history`` option
fill them from a :class:`~gaussport.solvers.Teleport` whose model is the problem's Gaussian
(:func:`exact_history_state`), so the measured slope is the method's order. A *cold start* (empty
history, lower-order warm-up steps) is what a plain :func:`gaussport.solve` does; one warm-up step
of local order ``q + 1`` caps the global order at ``q + 1``
(docs/devdocs-derivations.md#warm-up-steps-cap-the-global-order), declared as
``solver.cold_start_order``. :func:`measured_local_order` measures one-step errors (local order =
global order + 1).
"""

from __future__ import annotations

from .contracts import (
    check_batch_independent,
    check_constant_exact,
    check_dtypes,
    check_nfe,
    check_order,
    check_rng_untouched,
    check_solver,
    check_start_anywhere,
)
from .problems import (
    ConstantDenoiser,
    CountingDenoiser,
    GaussianProblem,
    HistoryMode,
    anisotropic_gaussian,
    exact_history_state,
    gaussian_of_shape,
    measured_local_order,
    measured_order,
    supports_seeding,
    values_combined,
)
from .strategies import batch_sizes, gaussians, random_gaussian, sigma_grids, spectra

__all__ = [
    "spectra",
    "gaussians",
    "sigma_grids",
    "batch_sizes",
    "random_gaussian",
    "anisotropic_gaussian",
    "gaussian_of_shape",
    "ConstantDenoiser",
    "CountingDenoiser",
    "GaussianProblem",
    "HistoryMode",
    "supports_seeding",
    "values_combined",
    "exact_history_state",
    "measured_order",
    "measured_local_order",
    "check_constant_exact",
    "check_batch_independent",
    "check_dtypes",
    "check_nfe",
    "check_rng_untouched",
    "check_start_anywhere",
    "check_order",
    "check_solver",
]
