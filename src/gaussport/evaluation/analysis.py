"""Analysis helpers: the NFE a curve needs to reach an error, and the teleport level that is safe.

* :func:`nfe_to_reach` -- where an error-vs-NFE curve crosses a level (log-log interpolation);
* :func:`velocity_error` -- how far the warm-start Gaussian's PF-ODE velocity is from the model's,
  per noise level, from model calls on noisy data (no sampling; defined in
  :mod:`gaussport.tuning.probes`, re-exported here);
* :func:`safe_level` -- the lowest level from which on that error stays below a threshold.

:func:`velocity_error` and :func:`safe_level` are step 1 of the procedure in
docs/choosing.md#choosing-sigma_skip (the safe level, without sampling); step 2, calibration on
seeds of its own, is :meth:`gaussport.evaluation.Evaluator.calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..tuning.probes import velocity_error

__all__ = ["nfe_to_reach", "velocity_error", "safe_level"]


def nfe_to_reach(nfes: Sequence[int], errors: Sequence[float], level: float) -> float:
    """The smallest NFE at which ``errors`` (measured at ``nfes``) reach ``level``.

    Log-log interpolation between the two measured points around the crossing; the first measured
    NFE if it is already below; ``inf`` if never reached.
    """
    pts = sorted((n, e) for n, e in zip(nfes, errors, strict=True) if math.isfinite(e) and e > 0)
    for k, (n, e) in enumerate(pts):
        if e <= level:
            if k == 0:
                return float(n)
            n0, e0 = pts[k - 1]
            if e0 == e:
                return float(n)
            f = (math.log(e0) - math.log(level)) / (math.log(e0) - math.log(e))
            return math.exp(math.log(n0) + f * (math.log(n) - math.log(n0)))
    return math.inf


def safe_level(errors: dict[float, float], tau: float = 3e-3) -> float:
    """The lowest level from which on, upwards, ``errors[level] <= tau``.

    ``errors`` as returned by :func:`velocity_error`; ``tau = 3e-3`` is the threshold of
    docs/choosing.md#choosing-sigma_skip (step 1). Returns ``inf`` when even the highest level
    exceeds ``tau`` (no level is safe: do not teleport without calibrating).
    """
    if not errors:
        raise ValueError("errors is empty; pass velocity_error(...) of at least one level.")
    safe = math.inf
    for level in sorted(errors, reverse=True):
        if not errors[level] <= tau:
            break
        safe = float(level)
    return safe
