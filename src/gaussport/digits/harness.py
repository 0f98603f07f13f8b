"""The evaluation harness on the shipped digits model: :func:`evaluator`."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..evaluation import Evaluator
from .files import load_digits_denoiser, load_digits_gaussian
from .frechet import DigitsFrechet

__all__ = ["evaluator"]


def evaluator(
    *,
    directory: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> Evaluator:
    """A :class:`~gaussport.evaluation.Evaluator` on the shipped 8x8-digits model (or one in ``directory``).

    The denoiser is the unconditional :func:`~gaussport.digits.load_digits_denoiser`, the warm
    start :func:`~gaussport.digits.load_digits_gaussian`, the sample shape ``(1, 8, 8)`` and the
    Frechet metric a :class:`~gaussport.digits.DigitsFrechet` (shipped classifier, held-out test
    split) unless ``frechet_metric`` is given. A model written by ``gaussport train-demo --out DIR``
    is read with ``directory=DIR``.

    Args:
        directory: the model's files (default: the package data).
        device: where the model runs.
        **kwargs: the other keyword arguments of :class:`~gaussport.evaluation.Evaluator`
            (``seeds``, ``reference_steps``, ``frechet_seeds``, ``cache_dir``, ...).

    Example:
        >>> import gaussport.digits
        >>> ev = gaussport.digits.evaluator(seeds=range(8), reference_steps=4)
        >>> plain = ev.evaluate("heun", 7)
        >>> warm = ev.evaluate("heun", 7, teleport="respace", sigma_skip=2.5)
    """
    net = load_digits_denoiser(device=device, directory=directory)
    gaussian = load_digits_gaussian(directory=directory)
    if "frechet_metric" not in kwargs:
        kwargs["frechet_metric"] = DigitsFrechet(directory=directory)
    return Evaluator(net, gaussian, shape=(1, 8, 8), device=device, **kwargs)
