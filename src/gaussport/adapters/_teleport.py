"""Warm-start plumbing shared by the adapters (private).

* :func:`load_statistics` and :class:`StatisticsCache` -- re-exported from :mod:`gaussport.sampling`,
  where the rule for a warm start given as a file path lives (:func:`gaussport.sampling.load_warm_start`,
  also used by :func:`gaussport.sample`): front-ends call samplers with a path on every image, so the
  k-diffusion samplers own a cache each;
* :func:`resolve_warm_start` -- a path, a Gaussian or a warm start that depends on the model's
  arguments (``bind(arguments)``, e.g. per-class Gaussians selected by the labels) turned into the
  warm-start object one run uses;
* :func:`check_sample_shape` -- statistics fitted in another space fail before any model call;
* :func:`from_noise` -- the teleport from pure noise (VE ``sigma = inf``, rectified flow ``t = 1``);
* :func:`float_attribute` -- a model's numeric attribute (``sigma_min``...) as a float, if it has one.

The maths of the teleport from pure noise (docs/warm-start.md#teleporting-from-pure-noise): in VE
coordinates the state at a
very large level ``s`` is ``x = s z`` up to ``O(1)``, and the Gaussian flow map
``mu + (Sigma + sigma^2)^(1/2) (Sigma + s^2)^(-1/2) (x - mu)`` tends to
``mu + (Sigma + sigma^2 I)^(1/2) z`` as ``s -> inf``. For rectified flow (``alpha = 1 - t``,
``sigma_t = t``) the state at ``t = 1`` *is* ``z``, so this limit is the exact native-coordinate
flow ``x_t = alpha_t mu + (alpha_t^2 Sigma + t^2 I)^(1/2) (x_1 - 0 * mu)`` divided by ``alpha_t``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..sampling import StatisticsCache, load_statistics, load_warm_start

__all__ = [
    "StatisticsCache",
    "load_statistics",
    "resolve_warm_start",
    "check_sample_shape",
    "from_noise",
    "sample_shape_of",
    "float_attribute",
]


def float_attribute(obj: Any, name: str) -> float | None:
    """``float(obj.name)``, or ``None`` if the attribute is missing or not a number."""
    value = getattr(obj, name, None)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sample_shape_of(warm_start: Any) -> tuple[int, ...] | None:
    """The sample shape a warm-start object was fitted to, if it says."""
    shape = getattr(warm_start, "shape", None)
    return tuple(shape) if shape is not None else None


def check_sample_shape(
    warm_start: Any, sample_shape: Sequence[int], *, what: str = "the model's samples"
) -> None:
    """Raise a ValueError naming the fix if the statistics were fitted to another sample shape."""
    expected = sample_shape_of(warm_start)
    if expected is None or tuple(expected) == tuple(sample_shape):
        return
    raise ValueError(
        f"the warm-start statistics were fitted to samples of shape {tuple(expected)}, but the shape "
        f"of {what} is {tuple(sample_shape)}. Fit the statistics on data in the model's own space and "
        "resolution (pixels scaled as the model expects, or scaled latents for latent models: "
        "gaussport.adapters.diffusers.fit_latent_gaussian)."
    )


def resolve_warm_start(
    warm_start: Any, arguments: Mapping[str, Any] | None = None, *, cache: StatisticsCache | None = None
) -> Any:
    """The warm-start object for one run.

    Args:
        warm_start: ``None``; a path to a statistics file; a :class:`~gaussport.analytic.Gaussian`
            (or anything with ``flow``); or a warm start that depends on the model's arguments --
            an object with ``bind(arguments)`` returning the warm start of this run, e.g.
            :class:`~gaussport.adapters.guidance.ClassConditionalGaussian`, bound to the labels
            found in ``arguments`` under its ``label_key``.
        arguments: the keyword arguments the model gets (k-diffusion ``extra_args``).
        cache: where statistics files already read are kept (see :func:`load_statistics`).

    Raises:
        ValueError: if a class-conditional warm start finds no labels.
        TypeError: for objects that cannot teleport.
    """
    if warm_start is None:
        return None
    warm_start = load_warm_start(warm_start, cache)  # a path: the rule of gaussport.sample
    bind = getattr(warm_start, "bind", None)
    if callable(bind):
        warm_start = bind(dict(arguments or {}))
    if not callable(getattr(warm_start, "flow", None)):
        raise TypeError(
            "warm_start must be a statistics file path, a gaussport.analytic.Gaussian, a "
            "ClassConditionalGaussian or an object with flow(x, sigma_from, sigma_to); got "
            f"{type(warm_start).__name__}."
        )
    return warm_start


def from_noise(warm_start: Any, z: Tensor, sigma: float) -> Tensor:
    """The exact teleport from pure noise: ``mu + (Sigma + sigma^2 I)^(1/2) z`` (VE, at ``sigma``).

    ``z`` is the noise the sampler starts from (rectified flow: the state at ``t = 1``; VE: the
    state at a level ``s`` divided by ``s``, in the limit ``s -> inf``). The result is the VE state
    at level ``sigma`` on the Gaussian's probability-flow trajectory.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the teleport target must be a finite noise level >= 0; got {sigma}.")
    own = getattr(warm_start, "from_noise", None)
    if not callable(own):
        raise TypeError(
            "teleporting from pure noise needs a gaussport Gaussian (or an object with from_noise(z, "
            f"sigma)); got {type(warm_start).__name__}."
        )
    check_sample_shape(warm_start, z.shape[1:], what="the noise")
    return own(z, sigma)
