"""Noise-level grids (strictly decreasing sigmas, optionally ending in 0).

Grids are tuples of Python floats, computed in float64. The families match k-diffusion's
``get_sigmas_*`` functions (which compute in float32, so values agree to ~1e-7 relative):

* :func:`karras` -- ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``
  (Karras et al. 2022, eq. 5), then a trailing 0;
* :func:`exponential` -- uniform in ``log sigma``, i.e. uniform in logSNR (``lambda = -log sigma``);
* :func:`polyexponential` -- ``log sigma`` interpolated with a ``ramp^rho`` warp.

The warm start needs two helpers: :func:`truncate` (keep the points below a sigma: fewer steps) and
:func:`respace` (the same number of steps of the same family over ``[sigma_min, sigma_start]``).
Building a grid is :func:`karras`, :func:`exponential` or :func:`polyexponential`. Where a *family*
is a parameter (``gaussport.sample(..., teleport=family)``, the evaluation harness), pass a
:class:`KarrasFamily`, :class:`ExponentialFamily` or :class:`PolyExponentialFamily`;
:func:`detect_family` recognises which family an existing grid belongs to.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from . import _deprecation
from ._checks import Grid, as_grid, grid_values

__all__ = [
    "GridFamily",
    "KarrasFamily",
    "ExponentialFamily",
    "PolyExponentialFamily",
    "karras",
    "exponential",
    "polyexponential",
    "truncate",
    "respace",
    "detect_family",
    "merge_repeats",
]

# Grids from float32 tensors (k-diffusion) match their family only to ~1e-7 relative.
_MATCH_RTOL = 1e-5


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer number of noise levels; got {n!r}.")
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)):
        raise ValueError(f"sigma_min and sigma_max must be finite; got {sigma_min}, {sigma_max}.")
    if not 0.0 < sigma_min:
        raise ValueError(f"sigma_min must be > 0 (the trailing 0 is appended separately); got {sigma_min}.")
    if n > 1 and not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be smaller than sigma_max; got {sigma_min} >= {sigma_max}.")


class GridFamily(ABC):
    """A family of grids between two noise levels: a value to pass where a family is a parameter.

    ``family(n, sigma_min, sigma_max)`` gives its grid of ``n`` levels (what :func:`respace` and the
    evaluation harness call); to build a grid directly use :func:`karras`, :func:`exponential` or
    :func:`polyexponential`.
    """

    @abstractmethod
    def levels(self, n: int, sigma_min: float, sigma_max: float) -> list[float]:
        """``n`` positive noise levels from ``sigma_max`` down to ``sigma_min`` (both included)."""

    def __call__(self, n: int, sigma_min: float, sigma_max: float, *, append_zero: bool = True) -> Grid:
        """``n`` noise levels from ``sigma_max`` to ``sigma_min``, plus a trailing 0 if ``append_zero``."""
        _check_range(n, sigma_min, sigma_max)
        if n == 1:
            values = [sigma_max]
        else:
            values = self.levels(n, sigma_min, sigma_max)
            # Pin the endpoints exactly (pow/exp round-trips are off by an ulp).
            values[0], values[-1] = sigma_max, sigma_min
        return as_grid(values + [0.0] if append_zero else values, name="grid")

    def matches(self, positive: Sequence[float]) -> bool:
        """Whether ``positive`` (a grid without its trailing 0) belongs to this family."""
        n = len(positive)
        if n <= 2:
            return True
        ours = self.levels(n, positive[-1], positive[0])
        return all(abs(a - b) <= _MATCH_RTOL * b for a, b in zip(ours, positive, strict=True))


@dataclass(frozen=True, slots=True)
class KarrasFamily(GridFamily):
    """Karras et al. (2022) grid: uniform in ``sigma^(1/rho)``; k-diffusion ``get_sigmas_karras``."""

    rho: float = 7.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rho) and self.rho > 0):
            raise ValueError(f"rho must be a positive finite number; got {self.rho}.")

    def levels(self, n: int, sigma_min: float, sigma_max: float) -> list[float]:
        a, b = sigma_max ** (1 / self.rho), sigma_min ** (1 / self.rho)
        return [(a + i / (n - 1) * (b - a)) ** self.rho for i in range(n)]


@dataclass(frozen=True, slots=True)
class ExponentialFamily(GridFamily):
    """Uniform in ``log sigma`` (= logSNR-uniform); k-diffusion ``get_sigmas_exponential``."""

    def levels(self, n: int, sigma_min: float, sigma_max: float) -> list[float]:
        a, b = math.log(sigma_max), math.log(sigma_min)
        return [math.exp(a + i / (n - 1) * (b - a)) for i in range(n)]


@dataclass(frozen=True, slots=True)
class PolyExponentialFamily(GridFamily):
    """``log sigma = log s_min + ramp^rho (log s_max - log s_min)``, ramp from 1 to 0;
    k-diffusion ``get_sigmas_polyexponential``. ``rho = 1`` is :class:`ExponentialFamily`."""

    rho: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rho) and self.rho > 0):
            raise ValueError(f"rho must be a positive finite number; got {self.rho}.")

    def levels(self, n: int, sigma_min: float, sigma_max: float) -> list[float]:
        a, b = math.log(sigma_max), math.log(sigma_min)
        return [math.exp(b + (1 - i / (n - 1)) ** self.rho * (a - b)) for i in range(n)]


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, append_zero: bool = True) -> Grid:
    """``n`` Karras noise levels from ``sigma_max`` to ``sigma_min``, plus a trailing 0.

    Same values as k-diffusion's ``get_sigmas_karras(n, sigma_min, sigma_max, rho)`` (n + 1 points).
    """
    return KarrasFamily(rho)(n, sigma_min, sigma_max, append_zero=append_zero)


def exponential(n: int, sigma_min: float, sigma_max: float, *, append_zero: bool = True) -> Grid:
    """``n`` noise levels uniform in ``log sigma`` (logSNR-uniform), plus a trailing 0."""
    return ExponentialFamily()(n, sigma_min, sigma_max, append_zero=append_zero)


def polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, *, append_zero: bool = True
) -> Grid:
    """``n`` polyexponential noise levels (k-diffusion ``get_sigmas_polyexponential``), plus 0."""
    return PolyExponentialFamily(rho)(n, sigma_min, sigma_max, append_zero=append_zero)


def _split_zero(grid: Grid) -> tuple[Grid, bool]:
    return (grid[:-1], True) if grid[-1] == 0.0 else (grid, False)


def detect_family(sigmas: Tensor | Sequence[float]) -> GridFamily | None:
    """The family a grid belongs to (exponential, Karras or polyexponential, with its rho), or None.

    Grids of one or two positive levels belong to every family; :class:`ExponentialFamily` is returned.
    """
    positive, _ = _split_zero(as_grid(sigmas))
    if ExponentialFamily().matches(positive):
        return ExponentialFamily()
    n, top, bottom = len(positive), positive[0], positive[-1]
    # Karras levels are weighted power means of top and bottom with exponent p = 1/rho, increasing
    # in p and tending to the geometric (exponential) grid as p -> 0: bisect p on the second level.
    geometric = math.exp(math.log(top) + (math.log(bottom) - math.log(top)) / (n - 1))
    if positive[1] > geometric:
        lo, hi = 1e-6, 64.0
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if KarrasFamily(1 / mid).levels(n, bottom, top)[1] < positive[1]:
                lo = mid
            else:
                hi = mid
        family = KarrasFamily(1 / math.sqrt(lo * hi))
        if family.matches(positive):
            return family
    # Polyexponential: log(s_1 / s_min) = ramp_1^rho * log(s_max / s_min), solvable for rho.
    span = math.log(top / bottom)
    ratio = math.log(positive[1] / bottom) / span
    if 0.0 < ratio < 1.0:
        family = PolyExponentialFamily(math.log(ratio) / math.log(1 - 1 / (n - 1)))
        if family.matches(positive):
            return family
    return None


def truncate(sigmas: Tensor | Sequence[float], sigma: float) -> Grid:
    """The grid starting at ``sigma``, followed by the levels of ``sigmas`` below it.

    A ``sigma`` within 1e-9 (relative) of a grid level starts exactly at that level. This is the
    paper's Heun setting: the first intervals are replaced, so fewer evaluations are made.

    Raises:
        ValueError: if ``sigma`` is outside ``[sigmas[-1], sigmas[0]]``.
    """
    grid = as_grid(sigmas)
    sigma = float(sigma)
    if not grid[-1] <= sigma <= grid[0]:
        raise ValueError(
            f"sigma = {sigma} is outside the grid [{grid[-1]}, {grid[0]}]; pick a level inside it."
        )
    for level in grid:
        if abs(level - sigma) <= 1e-9 * level:
            sigma = level
    return (sigma,) + tuple(s for s in grid if s < sigma)


def respace(sigmas: Tensor | Sequence[float], sigma_start: float, family: GridFamily | None = None) -> Grid:
    """The same number of steps of the same family, spread over ``[sigma_min, sigma_start]``.

    ``sigma_min`` is the smallest positive level of ``sigmas``; a trailing 0 is kept. The family is
    detected from ``sigmas`` unless given. This is the paper's DPM-Solver/UniPC setting: the same
    number of evaluations re-allocated below the teleport level.

    Raises:
        ValueError: if ``sigma_start`` is not in ``(sigma_min, sigmas[0]]``, or the family cannot
            be detected (then pass ``family=`` explicitly, or use :func:`truncate`).
    """
    grid = as_grid(sigmas)
    positive, zero = _split_zero(grid)
    sigma_start = float(sigma_start)
    if not positive:
        raise ValueError("cannot respace a grid with no positive noise level.")
    sigma_min = positive[-1]
    if len(positive) == 1:
        if not 0.0 < sigma_start <= positive[0]:
            raise ValueError(f"sigma_start = {sigma_start} must lie in (0, {positive[0]}].")
        return as_grid([sigma_start, 0.0] if zero else [sigma_start])
    if not sigma_min < sigma_start <= positive[0]:
        raise ValueError(
            f"sigma_start = {sigma_start} must lie in (sigma_min, sigma_max] = ({sigma_min}, {positive[0]}] "
            "to respace the grid below it."
        )
    if family is None:
        family = detect_family(grid)
        if family is None:
            raise ValueError(
                "cannot tell which family this grid belongs to (not Karras, exponential or "
                "polyexponential); pass family=gaussport.grids.KarrasFamily(rho=...) or similar, or use "
                "teleport='truncate'."
            )
    return family(len(positive), sigma_min, sigma_start, append_zero=zero)


def merge_repeats(sigmas: Tensor | Sequence[float]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Merge consecutive repeated levels: the distinct levels in order, and where each level went.

    Front-ends hand samplers lists with repeated levels (hand-made lists; ComfyUI's "simple"
    scheduler above 1000 steps), i.e. zero-length intervals, which k-diffusion's samplers step
    through without moving. ``merge_repeats(sigmas)`` returns ``(levels, where)`` with
    ``levels[where[i]] == sigmas[i]``; an interval ``i`` of ``sigmas`` has zero length exactly when
    ``where[i] == where[i + 1]``. The levels are not checked for order (:func:`as_grid` does that).

    Example:
        >>> merge_repeats([3.0, 1.0, 1.0, 0.0])
        ((3.0, 1.0, 0.0), (0, 1, 1, 2))
    """
    levels: list[float] = []
    where: list[int] = []
    for value in grid_values(sigmas):
        if not levels or value != levels[-1]:
            levels.append(value)
        where.append(len(levels) - 1)
    return tuple(levels), tuple(where)


__getattr__ = _deprecation.module_aliases(
    __name__,
    {
        "Karras": ("gaussport.grids.KarrasFamily (or grids.karras(...) for a grid)", lambda: KarrasFamily),
        "Exponential": (
            "gaussport.grids.ExponentialFamily (or grids.exponential(...) for a grid)",
            lambda: ExponentialFamily,
        ),
        "PolyExponential": (
            "gaussport.grids.PolyExponentialFamily (or grids.polyexponential(...) for a grid)",
            lambda: PolyExponentialFamily,
        ),
        "logsnr_uniform": (
            "gaussport.grids.exponential (uniform in log sigma = logSNR)",
            lambda: exponential,
        ),
    },
)
