"""The evaluation harness: measure solvers and the warm start on *your* denoiser, Gaussian and data.

Split by concern:

* :mod:`~gaussport.evaluation.harness` -- :class:`Evaluator` (seeds, exact endpoints, NFE budgets,
  runs with and without a teleport, calibration) and what it returns
  (:mod:`~gaussport.evaluation.results`: :class:`Budget`, :class:`Evaluation`, :class:`Calibration`);
  the exact endpoints' memory and disk cache is :mod:`~gaussport.evaluation.endpoints`;
* :mod:`~gaussport.evaluation.analysis` -- :func:`nfe_to_reach`, :func:`velocity_error`,
  :func:`safe_level`;
* :mod:`~gaussport.evaluation.explained` -- :func:`explained_variance` (``1 - EV`` and the relative
  velocity error of analytic models against the model per noise level) and its plot;
* :mod:`~gaussport.evaluation.reporting` -- :func:`markdown_table` and the plots
  (:func:`plot_quality`, :func:`plot_heatmap`, :func:`save_sample_panels`).

Nothing here knows a particular model: the Frechet distance is computed in the feature space of
the metric the caller passes (``Evaluator(frechet_metric=...)``). The shipped digits model has its
own factory, :func:`gaussport.digits.evaluator`.
"""

from .analysis import nfe_to_reach, safe_level, velocity_error
from .explained import ExplainedVariance, explained_variance, plot_explained_variance
from .harness import SIGMA_MAX, SIGMA_MIN, TELEPORTS, Evaluator
from .reporting import Series, markdown_table, plot_heatmap, plot_quality, save_sample_panels
from .results import Budget, Calibration, Evaluation

__all__ = [
    "Budget",
    "Evaluation",
    "Calibration",
    "Evaluator",
    "TELEPORTS",
    "SIGMA_MIN",
    "SIGMA_MAX",
    "nfe_to_reach",
    "velocity_error",
    "safe_level",
    "ExplainedVariance",
    "explained_variance",
    "plot_explained_variance",
    "markdown_table",
    "Series",
    "plot_quality",
    "plot_heatmap",
    "save_sample_panels",
]
