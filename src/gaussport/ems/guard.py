"""The guard of DPM-Solver-v3 for warm-start EMS (docs/ems.md#the-guard): two transforms of an EMS."""

from __future__ import annotations

import math
import weakref

import torch

from ._statistics import EMS

__all__ = ["degenerate_like", "revert_above"]

# Guarded EMS per base EMS (weak: dropped with it), so that runs over one cached base EMS share
# one guarded EMS and its memoised coefficient tables.
_GUARDED: weakref.WeakKeyDictionary[EMS, dict[tuple, EMS]] = weakref.WeakKeyDictionary()


def _memo(ems: EMS, key: tuple, build: object) -> EMS:
    known = _GUARDED.setdefault(ems, {})
    if key not in known:
        known[key] = build()  # type: ignore[operator]
    return known[key]


def revert_above(ems: EMS, level: float, *, width: float = 0.5) -> EMS:
    """``ems`` below ``level``, the degenerate EMS ``l = 1, s = b = 0`` above it, blended in log sigma.

    With ``w(sigma) = 1 / (1 + exp((log sigma - log level) / width))`` (1 well below ``level``, 0
    well above it) the curves are ``l' = w l + (1 - w)``, ``s' = w s``, ``b' = w b`` on the same
    grid: at every level a convex combination of the two EMS. DPM-Solver-v3 is exact for any EMS
    up to the Taylor remainder of its ``g``, so only the error constant changes; the blend is
    smooth where ``l ~ 1`` already (high noise), so ``g`` stays smooth (docs/ems.md#the-guard).

    Args:
        ems: the statistics to guard (typically the analytic EMS of a warm-start Gaussian).
        level: the noise level where the blend is half way (> 0).
        width: the blend's width in ``log sigma`` (> 0): the weight is 0.88 / 0.12 one ``e``-fold
            below / above ``level``.

    Returns:
        New EMS on ``ems``'s grid; ``source`` unchanged, ``metadata["guard"] = {"level", "width"}``;
        the same object for the same ``ems`` (held weakly), ``level`` and ``width``.

    Raises:
        TypeError, ValueError: ``level`` or ``width`` that is not a positive finite number.

    Cost: O(N d) for ``N + 1`` levels of ``d`` values (three blends), once per ``ems``.
    """
    for name, value in (("level", level), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"revert_above: {name} must be a number; got {value!r}.")
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"revert_above: {name} must be a positive finite number; got {value!r}.")
    return _memo(ems, ("above", float(level), float(width)), lambda: _blend(ems, float(level), float(width)))


def degenerate_like(ems: EMS) -> EMS:
    """The degenerate EMS ``l = 1, s = b = 0`` on ``ems``'s grid and shape, marked as guarded.

    ``source = "degenerate"`` (DPM-Solver-v3 then runs the closed-form DPM-Solver++ integrals),
    ``metadata["guard"] = {"degenerate": True}``; the same object for the same ``ems`` (held weakly).
    """

    def build() -> EMS:
        ones = torch.ones_like(ems.l)
        return EMS._adopt(
            ones,
            torch.zeros_like(ems.s),
            torch.zeros_like(ems.b),
            sigma_min=ems.sigma_min,
            sigma_max=ems.sigma_max,
            source="degenerate",
            metadata={"guard": {"degenerate": True}},
        )

    return _memo(ems, ("degenerate",), build)


def _blend(ems: EMS, level: float, width: float) -> EMS:
    lambdas = torch.tensor(ems.lambdas, dtype=torch.float64)
    # log sigma = -lambda: w = sigmoid((log level - log sigma) / width).
    weight = torch.sigmoid((math.log(level) + lambdas) / width)
    weight = weight.reshape(-1, *([1] * (ems.l.ndim - 1))).to(ems.l.dtype)
    metadata = dict(ems.metadata or {})
    metadata["guard"] = {"level": level, "width": width}
    return EMS._adopt(
        weight * ems.l + (1.0 - weight),
        weight * ems.s,
        weight * ems.b,
        sigma_min=ems.sigma_min,
        sigma_max=ems.sigma_max,
        samples=ems.samples,
        source=ems.source,
        metadata=metadata,
    )
