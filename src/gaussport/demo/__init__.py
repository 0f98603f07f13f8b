"""``gaussport demo``: gaussport's applications composed with the evaluation harness.

The demo only composes: a model (the shipped digits model of :mod:`gaussport.digits`, or an
analytic Gaussian mixture with an exact denoiser) and the library's harness
(:mod:`gaussport.evaluation`), whose reports (:func:`~gaussport.evaluation.markdown_table`,
:func:`~gaussport.evaluation.plot_quality`) both targets share.

* :mod:`gaussport.demo.digits_demo` -- the default target: the shipped digits model, each solver
  at each NFE budget, with and without a teleport (:func:`run_digits_demo`);
* :mod:`gaussport.demo.mixture_demo` -- ``--target mixture`` (:func:`run_mixture_demo`).
"""

from ..evaluation import SIGMA_MAX, SIGMA_MIN
from .digits_demo import (
    DIGITS_DEFAULTS,
    FRECHET_NOISE,
    DigitsDemo,
    check_digits_demo,
    digits_table,
    run_digits_demo,
    write_digits_outputs,
)
from .mixture_demo import (
    DemoRow,
    check_mixture_demo,
    demo_target,
    format_table,
    plot_rows,
    run_mixture_demo,
)

__all__ = [
    "SIGMA_MIN",
    "SIGMA_MAX",
    "DIGITS_DEFAULTS",
    "FRECHET_NOISE",
    "DigitsDemo",
    "check_digits_demo",
    "run_digits_demo",
    "digits_table",
    "write_digits_outputs",
    "DemoRow",
    "demo_target",
    "check_mixture_demo",
    "run_mixture_demo",
    "format_table",
    "plot_rows",
]
