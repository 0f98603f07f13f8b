"""Analytic data models: exact denoisers, the closed-form Gaussian flow, moment fitting.

* :class:`Gaussian` -- ``N(mu, Sigma)``: exact denoiser, exact PF-ODE flow map (the warm start),
  exact samples, fitting in float64, files without pickling.
* :class:`GaussianMixture` -- exact denoiser of a mixture (no closed-form flow); fitted class-wise
  (:func:`fit_class_mixture`) or by k-means (:func:`fit_kmeans_mixture`, :func:`kmeans`).
* :class:`EmpiricalMixture` -- the training set as point masses: the exact memorising denoiser.
* :class:`MixtureFlow` -- a mixture's PF-ODE flow, integrated numerically: a zero-model-call warm start.
* Covariance representations: :class:`Dense`, :class:`Diagonal`, :class:`LowRankPlusIsotropic`.
* :class:`MomentAccumulator` -- streaming float64 mean and covariance (symmetric rank-k updates,
  Chan merges, ``torch.distributed`` all-reduce); :func:`fit_low_rank` -- the low-rank fit that never
  forms ``d x d``.
"""

from .covariance import Covariance, Dense, Diagonal, LowRankPlusIsotropic
from .empirical import EmpiricalMixture
from .gaussian import Gaussian, fit_low_rank
from .mixture import GaussianMixture, anisotropic_mixture, fit_class_mixture, fit_kmeans_mixture, kmeans
from .mixture_flow import MixtureFlow
from .moments import MomentAccumulator

__all__ = [
    "Covariance",
    "Dense",
    "Diagonal",
    "EmpiricalMixture",
    "LowRankPlusIsotropic",
    "Gaussian",
    "GaussianMixture",
    "MixtureFlow",
    "MomentAccumulator",
    "anisotropic_mixture",
    "fit_class_mixture",
    "fit_kmeans_mixture",
    "fit_low_rank",
    "kmeans",
]
