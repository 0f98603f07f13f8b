"""Input validation shared by every entry point.

Each check runs once, at the boundary of a public function, never inside a step loop. Messages
name the problem and the fix (docs/conventions.md#bad-input).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

Grid = tuple[float, ...]


def _dense(t: Tensor, name: str) -> None:
    """Meta tensors hold no values and sparse ones no dense layout: neither is a state or a grid."""
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values; pass a tensor with data.")
    if t.layout != torch.strided:
        raise TypeError(f"{name} has layout {t.layout}; pass a dense tensor ({name}.to_dense()).")


def _host(t: Tensor | np.ndarray, name: str) -> np.ndarray | Tensor:
    """A tensor's values on the host (one copy), or the array itself."""
    if not isinstance(t, Tensor):
        return t
    _dense(t, name)
    return t.detach().cpu()


def _real(value: object, name: str) -> float:
    """``value`` as a Python float: a real number, or a 0-d real tensor/array; never a bool or a string."""
    if isinstance(value, (Tensor, np.ndarray)):
        if value.ndim != 0:
            raise ValueError(
                f"{name} is a {type(value).__name__} of shape {tuple(value.shape)}; a noise level is one "
                "number (grids are one flat sequence of levels, not nested)."
            )
        value = _host(value, name).item()  # a Python bool, int, float or complex (or an object)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
            raise ValueError(
                f"{name} is a {type(value).__name__}; a noise level is one number (grids are one flat "
                "sequence of levels, not nested)."
            )
        raise TypeError(f"{name} = {value!r:.40} is not a real number; noise levels are floats.")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} = {value!r:.40} is too large for a float; use a finite level.") from None


def noise_level(value: object, *, name: str = "sigma_skip") -> float:
    """One noise level (``sigma_skip``, ``t_skip``...) as a Python float, finite and >= 0.

    The same rule as every level of a grid (:func:`grid_values`): a real number or a 0-d real
    tensor/array; booleans, strings ("80" is not 80.0), complex numbers and sequences are refused.
    """
    level = _real(value, name)
    if not math.isfinite(level):
        raise ValueError(f"{name} = {level} is not finite; every noise level must be a finite float.")
    if level < 0.0:
        raise ValueError(f"{name} = {level} is negative; noise levels are standard deviations >= 0.")
    return level


def grid_values(sigmas: Tensor | Sequence[float], *, name: str = "sigmas") -> list[float]:
    """The noise levels of ``sigmas`` as Python floats, each finite and >= 0 (order not checked).

    The documented forms (docs/conventions.md#grids): a 1-D real tensor or NumPy array (on any
    device), or a sequence (list, tuple, ...) of real numbers. Strings, booleans, complex numbers,
    nested sequences, 2-D arrays, sets and other unordered or one-shot iterables are refused. A
    tensor is copied to the host once, here. :func:`as_grid` adds the ordering rules; front-end
    adapters that accept repeated levels (:func:`gaussport.grids.merge_repeats`) start from this.
    """
    if isinstance(sigmas, (Tensor, np.ndarray)):
        if sigmas.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D tensor or array of noise levels; got shape {tuple(sigmas.shape)}."
            )
        items = _host(sigmas, name).tolist()
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, (str, bytes, bytearray)):
        items = sigmas
    else:
        raise TypeError(
            f"{name} must be a 1-D tensor or a sequence of floats (a list or tuple); got "
            f"{type(sigmas).__name__}."
        )
    if not items:
        raise ValueError(f"{name} is empty; pass at least one noise level (two for one step).")
    return [noise_level(v, name=f"{name}[{i}]") for i, v in enumerate(items)]


def as_grid(sigmas: Tensor | Sequence[float], *, name: str = "sigmas", increasing: bool = False) -> Grid:
    """Validate a noise-level grid and return it as a tuple of Python floats.

    A grid is a strictly decreasing, non-empty sequence of finite sigmas >= 0 (it may end in 0
    and may start anywhere). Converting once here keeps device tensors out of the step loop.

    With ``increasing=True`` the grid must instead be strictly increasing and start above 0: an
    inversion's grid (data to noise, :func:`gaussport.inversion.invert`). The probability-flow ODE
    is singular at sigma = 0, so no step starts there going up (docs/conventions.md#grids).
    """
    values = grid_values(sigmas, name=name)
    if increasing:
        if values[0] == 0.0 and len(values) > 1:
            raise ValueError(
                f"{name}[0] = 0: an inversion cannot start at sigma = 0, where the probability-flow ODE "
                "is singular (its slope (x - D) / sigma is 0 / 0 and every trajectory passes through the "
                "data point). Start at a small level instead, e.g. the sampling grid's smallest positive "
                f"level or 1e-4 (ComfyUI's FlipSigmas replaces a leading 0 by 1e-4): {name}[0] = 1e-4."
            )
        for i in range(len(values) - 1):
            if not values[i + 1] > values[i]:
                raise ValueError(
                    f"{name} must be strictly increasing for an inversion; {name}[{i}] = {values[i]!r} is "
                    f"followed by {name}[{i + 1}] = {values[i + 1]!r}. Sort it ascending and remove repeats."
                )
        return tuple(values)
    for i in range(len(values) - 1):
        if not values[i + 1] < values[i]:
            upwards = all(b > a for a, b in zip(values, values[1:], strict=False))
            hint = " To integrate upwards (inversion, data to noise) use gaussport.invert." if upwards else ""
            raise ValueError(
                f"{name} must be strictly decreasing; {name}[{i}] = {values[i]!r} is followed by "
                f"{name}[{i + 1}] = {values[i + 1]!r}. Sort it descending and remove repeats.{hint}"
            )
    return tuple(values)


def check_state(x: Tensor, *, name: str = "x") -> None:
    """A state must be a floating-point tensor with a batch dimension and only finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype; got {x.dtype}. Convert it with x.float().")
    _dense(x, name)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension [B, ...]; got a 0-d tensor.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains NaN or infinite values; check the initial noise or the input image."
        )


def state_dtype(x_dtype: torch.dtype, requested: torch.dtype | None) -> torch.dtype:
    """The dtype solver state is kept in (docs/conventions.md#precision).

    float32 by default; float64 when requested or when the input already is float64. Half-precision
    inputs are promoted: their rounding error would swamp any solver's truncation error.
    """
    if requested is not None:
        if requested not in (torch.float32, torch.float64):
            raise ValueError(
                f"dtype must be torch.float32 or torch.float64 for solver state; got {requested}."
            )
        return requested
    return torch.float64 if x_dtype == torch.float64 else torch.float32


def as_int(value: Any, what: str, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as a Python ``int``: counts, ranks and seeds given as NumPy or 0-d tensor integers too.

    Integral NumPy scalars and 0-d integer tensors are converted; a ``bool``, a float (even ``2.0``),
    a string or an array is refused.

    Raises:
        TypeError: ``value`` is not an integer (naming ``what``).
        ValueError: ``value`` is below ``minimum``.
    """
    if value is None and allow_none:
        return None
    number: int | None = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    elif (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    ):
        number = int(value.item())
    if number is None:
        raise TypeError(
            f"{what} must be an integer{' or None' if allow_none else ''}; got {value!r} "
            f"({type(value).__name__})."
        )
    if minimum is not None and number < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {number}.")
    return number


def real_float64(values: object, what: str, *, finite: bool = True) -> Tensor:
    """A float64 CPU copy of ``values`` (never a view of the caller's tensor or array).

    Value objects store their numbers through this, so a caller changing its tensor afterwards
    changes nothing. Strings, booleans (also as elements of a list), complex numbers and
    non-numbers are refused with a ``TypeError`` naming ``what``; with ``finite``, NaN and
    infinities with a ``ValueError``.
    """
    elements = values if isinstance(values, (list, tuple)) else ()
    if isinstance(values, (str, bytes, bool, np.bool_)) or any(
        isinstance(v, (bool, np.bool_, str, bytes)) for v in elements
    ):
        raise TypeError(f"the {what} must be numbers; got {values!r:.60}.")
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"the {what} must be a tensor or array of numbers; got {type(values).__name__}."
        ) from exc
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"the {what} must be real numbers; got dtype {t.dtype}.")
    t = t.detach().to("cpu", torch.float64, copy=True)
    if finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"the {what} contain NaN or infinite values.")
    return t
