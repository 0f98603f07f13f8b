"""The analytic demo: Heun with and without the Gaussian warm start on a Gaussian-mixture target.

The target is a built-in anisotropic Gaussian mixture (an exact denoiser), so the exact ODE endpoint
of every trajectory is known from a high-accuracy reference solve (:func:`gaussport.reference_solve`),
and the warm start is the mixture's moment-matched Gaussian -- what a fit to the data would give.
For each grid size the demo reports the error to the exact endpoint of

* plain Heun on a Karras grid (``2n - 1`` evaluations for ``n`` steps),
* Heun after a teleport to ``sigma_skip`` with the same number of steps re-spaced below it
  (same evaluations: ``schedule="respace"``),
* Heun after a teleport onto the largest grid level at or below ``sigma_skip``, keeping the grid
  below it (fewer evaluations: ``schedule="truncate"``, the paper's Heun setting).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from . import grids
from .analytic import GaussianMixture, anisotropic_mixture
from .reference import reference_solve
from .solve import sample, solve
from .solvers import get as get_solver

__all__ = ["DemoRow", "demo_target", "run_mixture_demo", "format_table", "plot_rows"]

logger = logging.getLogger("gaussport")

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo table (errors are RMS per coordinate against the exact endpoint)."""

    steps: int
    nfe_plain: int
    error_plain: float
    nfe_respace: int
    error_respace: float
    nfe_truncate: int
    error_truncate: float


def demo_target() -> GaussianMixture:
    """The built-in target: 32 dimensions, 6 anisotropic components (eigenvalues 1e-3..0.1)."""
    return anisotropic_mixture(dim=32, n_components=6, spread=2.0, eigenvalue_range=(1e-3, 0.1), seed=0)


def _rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt())


def run_mixture_demo(
    steps: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 12, 16),
    *,
    solver: str = "heun",
    sigma_skip: float = 10.0,
    batch: int = 64,
    seed: int = 0,
    disable: bool | None = None,
) -> list[DemoRow]:
    """Run the demo and return its table rows (see the module docstring)."""
    get_solver(solver)  # an unknown name fails here, before the reference solve
    target = demo_target()
    gaussian = target.moments()
    x = target.sample(batch, SIGMA_MAX, torch.Generator().manual_seed(seed), dtype=torch.float64)
    logger.info("computing the exact endpoints (RK4 reference solve) ...")
    exact = reference_solve(
        target, x, grids.karras(2, SIGMA_MIN, SIGMA_MAX), steps_per_unit=50, disable=disable
    )
    rows = []
    for n in steps:
        sigmas = grids.karras(n, SIGMA_MIN, SIGMA_MAX)
        plain = solve(target, x, sigmas, solver, disable=True)
        respace = sample(
            target,
            x,
            sigmas,
            solver,
            warm_start=gaussian,
            sigma_skip=sigma_skip,
            schedule="respace",
            disable=True,
        )
        on_grid = max(s for s in sigmas if s <= sigma_skip)
        truncate = sample(
            target,
            x,
            sigmas,
            solver,
            warm_start=gaussian,
            sigma_skip=on_grid,
            schedule="truncate",
            disable=True,
        )
        rows.append(
            DemoRow(
                n,
                plain.nfe,
                _rms(plain.x, exact),
                respace.nfe,
                _rms(respace.x, exact),
                truncate.nfe,
                _rms(truncate.x, exact),
            )
        )
    return rows


def format_table(rows: list[DemoRow], sigma_skip: float) -> str:
    """The demo table as aligned text."""
    head = (
        f"{'steps':>5}  {'NFE':>4} {'no teleport':>12}  |  teleport to sigma={sigma_skip:g}:  "
        f"{'NFE':>4} {'respaced':>10}  {'NFE':>4} {'truncated':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.steps:>5}  {r.nfe_plain:>4} {r.error_plain:>12.4g}  |  {'':>26}"
            f"{r.nfe_respace:>4} {r.error_respace:>10.4g}  {r.nfe_truncate:>4} {r.error_truncate:>10.4g}"
        )
    lines.append("errors: RMS per coordinate against the exact ODE endpoint from the same noise")
    return "\n".join(lines)


def plot_rows(rows: list[DemoRow], path: str | os.PathLike[str], *, solver: str, sigma_skip: float) -> bool:
    """Write the error-vs-NFE plot as a PNG; returns False (with a log message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install 'gaussport[plot]').")
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.loglog(
        [r.nfe_plain for r in rows], [r.error_plain for r in rows], "o-", label=f"{solver}, no teleport"
    )
    ax.loglog(
        [r.nfe_respace for r in rows],
        [r.error_respace for r in rows],
        "s-",
        label=f"teleport to {sigma_skip:g} + {solver} (respaced)",
    )
    truncated = sorted((r.nfe_truncate, r.error_truncate) for r in rows)
    ax.loglog(
        [p[0] for p in truncated],
        [p[1] for p in truncated],
        "^--",
        label=f"teleport to {sigma_skip:g} + {solver} (truncated grid)",
    )
    ax.set_xlabel("denoiser evaluations (NFE)")
    ax.set_ylabel("RMS error to the exact endpoint")
    ax.set_title("Gaussian-mixture target (d = 32, 6 components)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
