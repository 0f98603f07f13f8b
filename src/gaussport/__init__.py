"""gaussport: fast, exact sampling of diffusion models.

A registry of probability-flow-ODE solvers behind one denoiser protocol, and an analytic warm
start ("teleportation") that replaces the first part of a sampling trajectory by the exact ODE
solution for a Gaussian fitted to the data. Conventions: docs/conventions.md; where things live:
docs/architecture.md.

Example:
    >>> import torch, gaussport
    >>> from gaussport.analytic import Gaussian
    >>> g = Gaussian(torch.zeros(4), torch.diag(torch.tensor([1.0, 0.5, 0.1, 0.01])))
    >>> sigmas = gaussport.grids.karras(10, 0.002, 80.0)
    >>> x = 80.0 * torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    >>> sol = gaussport.sample(g, x, sigmas, "heun", warm_start=g, sigma_skip=sigmas[4], disable=True)
    >>> sol.nfe
    11
"""

import logging as _logging

from . import analytic, ems, grids, schedules, solvers
from .denoiser import Denoiser, DenoiserCall, FlowMap
from .inversion import invert
from .reference import reference_solve
from .sampling import Callback, Solution, StepInfo, sample, solve

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "Denoiser",
    "DenoiserCall",
    "FlowMap",
    "Solution",
    "StepInfo",
    "analytic",
    "ems",
    "grids",
    "invert",
    "reference_solve",
    "sample",
    "schedules",
    "solve",
    "solvers",
    "__version__",
]

_logging.getLogger("gaussport").addHandler(_logging.NullHandler())
