"""Analytic data models: exact denoisers, the closed-form Gaussian flow, moment fitting.

* :class:`Gaussian` -- ``N(mu, Sigma)``: exact denoiser, exact PF-ODE flow map (the warm start),
  exact samples, fitting in float64, files without pickling.
* :class:`GaussianMixture` -- exact denoiser of a mixture (no closed-form flow).
* Covariance representations: :class:`Dense`, :class:`Diagonal`, :class:`LowRankPlusIsotropic`.
"""

from .covariance import Covariance, Dense, Diagonal, LowRankPlusIsotropic
from .gaussian import Gaussian, MomentAccumulator
from .mixture import GaussianMixture, anisotropic_mixture

__all__ = [
    "Covariance",
    "Dense",
    "Diagonal",
    "LowRankPlusIsotropic",
    "Gaussian",
    "GaussianMixture",
    "MomentAccumulator",
    "anisotropic_mixture",
]
