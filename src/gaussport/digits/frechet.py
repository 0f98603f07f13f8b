"""The digits' Frechet distance: an FID analogue in the features of the shipped classifier.

The Frechet Inception Distance compares Gaussian moments of Inception-v3 features of generated and
real images; for 8x8 digits the features are the penultimate layer of the shipped
:class:`~gaussport.digits.classifier.DigitsClassifier` and the real images the held-out test split.
The distance itself is the general :func:`gaussport.metrics.frechet_distance`. Numbers are
comparable only with each other, never with published FIDs.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..metrics import feature_statistics, frechet_distance
from .classifier import DigitsClassifier
from .files import load_digits_classifier, load_digits_test_set

__all__ = ["DigitsFrechet", "digits_features", "digits_frechet_distance"]


@torch.no_grad()
def digits_features(
    samples: Tensor, classifier: torch.nn.Module | None = None, *, batch_size: int = 1024
) -> Tensor:
    """Penultimate classifier features ``[n, d]`` (float64) of digits samples in [-1, 1].

    Samples ``[n, 1, 8, 8]`` are clamped to [-1, 1] (the data range) but not quantised to the 17
    pixel levels, so the metric stays sensitive to sub-pixel differences between solvers.
    ``classifier`` defaults to the shipped one.
    """
    if classifier is None:
        classifier = load_digits_classifier()
    if samples.ndim != 4 or tuple(samples.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits samples must have shape [n, 1, 8, 8]; got {tuple(samples.shape)}.")
    param = next(classifier.parameters())
    x = samples.detach().to(device=param.device, dtype=param.dtype).clamp(-1.0, 1.0)
    feats = [classifier.features(chunk) for chunk in x.split(batch_size)]
    return torch.cat(feats).to("cpu", torch.float64)


class DigitsFrechet:
    """``samples -> float``: the Frechet distance of their classifier features to the test split.

    The classifier and the test split's feature statistics are loaded on the first call and kept
    by this object (the caller owns it: one per model directory), so a harness calling it for
    every configuration reads the files once. Pass it as ``Evaluator(frechet_metric=...)``.

    Args:
        directory: read the classifier and test split from here instead of the package data.
    """

    def __init__(self, *, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = None if directory is None else os.fspath(directory)
        self._classifier: DigitsClassifier | None = None
        self._reference: tuple[Tensor, Tensor] | None = None

    def _load(self) -> tuple[DigitsClassifier, tuple[Tensor, Tensor]]:
        if self._classifier is None or self._reference is None:
            test = load_digits_test_set(directory=self.directory)
            self._classifier = load_digits_classifier(directory=self.directory)
            self._reference = feature_statistics(digits_features(test.images, self._classifier))
        return self._classifier, self._reference

    def __call__(self, samples: Tensor) -> float:
        classifier, reference = self._load()
        return frechet_distance(digits_features(samples, classifier), reference)


def digits_frechet_distance(samples: Tensor, *, directory: str | os.PathLike[str] | None = None) -> float:
    """FID analogue of 8x8-digits samples: Frechet distance of shipped-classifier features to the test split.

    The reference is the held-out test split (360 images), so the value includes a finite-sample
    bias that depends on the number of samples: compare values computed with equal sample counts,
    and judge differences against the seed-to-seed spread (:func:`gaussport.metrics.frechet_over_seeds`).
    The training split against the test split gives the floor recorded in ``DIGITS_MODEL.md``. For
    repeated calls keep one :class:`DigitsFrechet` instead (this function reads the files each time).

    Args:
        samples: ``[n, 1, 8, 8]`` in [-1, 1] (model space), ``n >= 2``.
        directory: read the classifier and test split from here instead of the package data.
    """
    return DigitsFrechet(directory=directory)(samples)
