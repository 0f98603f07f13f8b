"""Trained models shipped with gaussport.

* :class:`DigitsUNet` -- a compact EDM-preconditioned, class-conditional U-Net for 8x8 images with
  EDM's ``EDMPrecond`` interface; :func:`load_digits_denoiser` loads the trained weights.
* :class:`DigitsClassifier` -- a tiny CNN whose features give the digits Frechet distance
  (:func:`gaussport.metrics.digits_frechet_distance`); :func:`load_digits_classifier`.
* :func:`load_digits_gaussian`, :func:`load_digits_class_gaussians` -- the Gaussian statistics of
  the training split (the warm starts); :func:`load_digits_test_set` -- the held-out split.

This subpackage is not imported by ``import gaussport``; import it explicitly
(``from gaussport.models import load_digits_denoiser``). Training lives in
:mod:`gaussport.models.train` (needs scikit-learn: ``pip install 'gaussport[train]'``).
"""

from .classifier import DigitsClassifier
from .digits import (
    DigitsTestSet,
    load_digits_class_gaussians,
    load_digits_classifier,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_test_set,
    model_to_pixels,
    pixels_to_model,
)
from .unet import DigitsUNet, edm_preconditioning

__all__ = [
    "DigitsClassifier",
    "DigitsTestSet",
    "DigitsUNet",
    "edm_preconditioning",
    "load_digits_class_gaussians",
    "load_digits_classifier",
    "load_digits_denoiser",
    "load_digits_gaussian",
    "load_digits_test_set",
    "model_to_pixels",
    "pixels_to_model",
]
