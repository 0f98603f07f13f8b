"""The shipped 8x8-digits model: an application of gaussport, and everything digits-specific in one place.

* :class:`DigitsUNet` -- a compact EDM-preconditioned, class-conditional U-Net for 8x8 images with
  EDM's ``EDMPrecond`` interface; :func:`load_digits_denoiser` loads the trained weights.
* :func:`load_digits_gaussian`, :func:`load_digits_class_gaussians` -- the Gaussian statistics of
  the training split (the warm starts); :func:`load_digits_test_set` -- the held-out split;
  :func:`load_digits_recipe` -- the tuned sampling recipe (teleport level and grid per solver and NFE).
* :class:`DigitsClassifier` and the digits Frechet distance (:func:`digits_frechet_distance`,
  :class:`DigitsFrechet`, :func:`digits_features`): an FID analogue in the shipped classifier's
  features, reference = the held-out split.
* :func:`evaluator` -- the evaluation harness (:class:`gaussport.evaluation.Evaluator`) on this
  model.
* :func:`train_demo_model` -- retrain everything into a directory, as shipped (``gaussport
  train-demo``): the recipe is :mod:`gaussport.digits.train` (needs scikit-learn: ``pip install
  'gaussport[train]'``), the release (Frechet reference points, model card)
  :mod:`gaussport.digits.release`.

``import gaussport`` does not import this package and the library never does: import it
explicitly (``from gaussport.digits import load_digits_denoiser``).
"""

from .classifier import DigitsClassifier
from .files import (
    DigitsTestSet,
    load_digits_class_gaussians,
    load_digits_classifier,
    load_digits_denoiser,
    load_digits_gaussian,
    load_digits_recipe,
    load_digits_test_set,
    model_to_pixels,
    pixels_to_model,
)
from .frechet import DigitsFrechet, digits_features, digits_frechet_distance
from .harness import evaluator
from .release import train_demo_model
from .unet import DigitsUNet, edm_preconditioning

__all__ = [
    "DigitsClassifier",
    "DigitsFrechet",
    "DigitsTestSet",
    "DigitsUNet",
    "digits_features",
    "digits_frechet_distance",
    "edm_preconditioning",
    "evaluator",
    "load_digits_class_gaussians",
    "load_digits_classifier",
    "load_digits_denoiser",
    "load_digits_gaussian",
    "load_digits_recipe",
    "load_digits_test_set",
    "model_to_pixels",
    "pixels_to_model",
    "train_demo_model",
]
