"""Analysis helpers: the NFE a curve needs to reach an error, and the teleport level that is safe.

* :func:`nfe_to_reach` -- where an error-vs-NFE curve crosses a level (log-log interpolation);
* :func:`velocity_error` -- how far the warm-start Gaussian's PF-ODE velocity is from the model's,
  per noise level, from model calls on noisy data (no sampling);
* :func:`safe_level` -- the lowest level from which on that error stays below a threshold.

:func:`velocity_error` and :func:`safe_level` are step 1 of the procedure in
docs/choosing.md#choosing-sigma_skip (the safe level, without sampling); step 2, calibration on
seeds of its own, is :meth:`gaussport.evaluation.Evaluator.calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

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


def velocity_error(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    gaussian: Callable[[Tensor, Tensor], Tensor],
    data: Tensor,
    levels: Iterable[float],
    *,
    repeats: int = 1,
    seed: int = 0,
    model_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[float, float]:
    """The warm start's relative velocity error per noise level.

    For probes ``x = x0 + sigma * eps`` (``x0`` the rows of ``data``, ``repeats`` noise draws each,
    one generator seeded with ``seed`` for all levels in the order given) it returns the mean over
    probes of ``|D(x) - D_G(x)| / |x - D(x)|``: the relative error of the PF-ODE velocity
    ``(x - D) / sigma`` when the Gaussian's denoiser ``D_G`` replaces the model's ``D`` (equal to
    ``sqrt(1 - EV)`` of the score). Where it is
    small the model's flow is the Gaussian's, so a teleport to that level costs almost nothing
    (docs/choosing.md#choosing-sigma_skip, step 1). It needs one model call per probe and level, no
    sampling and no reference solve. Probes and ``D_G`` are float64 on the CPU; the model runs in
    ``model_dtype`` on ``device``.

    Raises:
        ValueError: for no levels, a level <= 0, ``repeats < 1`` or empty ``data``.
    """
    chosen = [float(v) for v in levels]
    if not chosen or any(not (v > 0.0 and math.isfinite(v)) for v in chosen):
        raise ValueError(f"levels must be positive finite noise levels (at least one); got {chosen}.")
    if repeats < 1 or data.shape[0] == 0:
        raise ValueError(f"need at least one data row and repeats >= 1; got {data.shape[0]} rows, {repeats}.")
    x0 = data.detach().to("cpu", torch.float64).repeat(repeats, *([1] * (data.dim() - 1)))
    gen = torch.Generator().manual_seed(int(seed))
    where = torch.device(device) if device is not None else torch.device("cpu")
    out: dict[float, float] = {}
    with torch.no_grad():
        for level in chosen:
            x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            sigma = torch.full((x.shape[0],), level, dtype=torch.float64)
            d = denoiser(x.to(where, model_dtype), sigma.to(where, model_dtype)).to("cpu", torch.float64)
            d_g = gaussian(x, sigma).to("cpu", torch.float64)
            ratio = (d - d_g).flatten(1).norm(dim=1) / (x - d).flatten(1).norm(dim=1)
            out[level] = float(ratio.mean())
    return out


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
