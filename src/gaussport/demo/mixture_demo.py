"""``gaussport demo --target mixture``: the analytic demo, an exact denoiser and no model files.

:func:`run_mixture_demo` samples a built-in anisotropic Gaussian mixture (:func:`demo_target`)
whose denoiser is exact, the warm start its moment-matched Gaussian, measured with the evaluation
harness on exact samples of the mixture's noisy marginal at ``sigma = 80``. For each grid size it
reports the error to the exact endpoint of

* plain Heun on a Karras grid (``2n - 1`` evaluations for ``n`` steps),
* Heun after a teleport to ``sigma_skip`` with the same number of steps re-spaced below it
  (same evaluations: ``teleport="respace"``),
* Heun after a teleport onto the largest grid level at or below ``sigma_skip``, keeping the grid
  below it (fewer evaluations: ``teleport="truncate"``, the paper's Heun setting).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..analytic import GaussianMixture, anisotropic_mixture
from ..evaluation import SIGMA_MAX, SIGMA_MIN, Evaluator, Series, plot_quality
from ..solvers import get as get_solver
from . import _arguments

__all__ = ["DemoRow", "demo_target", "check_mixture_demo", "run_mixture_demo", "format_table", "plot_rows"]


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


def check_mixture_demo(
    steps: Sequence[int] = (3, 4, 5, 6, 8, 10, 12, 16),
    *,
    solver: str = "heun",
    sigma_skip: float = 10.0,
    batch: int = 64,
    seed: int = 0,
    names: Mapping[str, str] | None = None,
) -> None:
    """Check the arguments of :func:`run_mixture_demo` without computing anything.

    Every grid size must leave a level of its Karras grid in ``(0.002, sigma_skip]`` for the
    truncated teleport to land on (a grid of 1 or 2 steps has none below 80 but 0.002).

    Args:
        names: what the caller calls the arguments, for the messages (the command line passes
            ``{"steps": "--steps", ...}``); the Python names otherwise. The rest: as
            :func:`run_mixture_demo`.

    Raises:
        ValueError: an unknown solver, a grid size below 1 or without such a level, a
            ``sigma_skip`` outside (0.002, 80], a batch below 1 or a negative seed.
        TypeError: a number that is not an integer, or a single number where a list is expected.
    """
    label = dict(names or {}).get  # the caller's names: flags on the command line
    steps_name, skip_name = label("steps", "steps"), label("sigma_skip", "sigma_skip")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(
            f"{steps_name} must be a list of grid sizes; got {steps!r} (write [{steps!r}] for one)."
        )
    if not steps:
        raise ValueError("no grid size given; pass at least one (e.g. 3 4 5 6).")
    get_solver(solver)  # an unknown name: the message lists the registered ones
    for n in steps:
        _arguments.integer(steps_name, n, minimum=1)
    _arguments.noise_level(skip_name, sigma_skip, SIGMA_MIN, SIGMA_MAX)
    _arguments.integer(label("batch", "batch"), batch, minimum=1)
    _arguments.seeds(label("seed", "seed"), seed, 1)
    planner = Evaluator(_no_model, None, shape=(1,), seeds=(0,), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    for n in steps:
        if _truncation_level(planner, solver, n, sigma_skip) <= SIGMA_MIN:
            more = (
                k
                for k in range(n + 1, n + 1000)
                if _truncation_level(planner, solver, k, sigma_skip) > SIGMA_MIN
            )
            least = next(more, None)
            fix = "more grid steps" if least is None else f"grid sizes of at least {least}"
            raise ValueError(
                f"{steps_name} {n}: its Karras grid has no level in ({SIGMA_MIN:g}, {sigma_skip:g}] for the "
                f"truncated teleport to land on; give {fix} or a larger {skip_name}."
            )


def _truncation_level(planner: Evaluator, solver: str, steps: int, sigma_skip: float) -> float:
    """The largest level of the ``steps`` grid at or below ``sigma_skip`` (where ``truncate`` lands)."""
    return max(s for s in planner.budget(solver, steps=steps).grid if s <= sigma_skip)


def _no_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the grid planner never calls its model")  # pragma: no cover


def run_mixture_demo(
    steps: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 12, 16),
    *,
    solver: str = "heun",
    sigma_skip: float = 10.0,
    batch: int = 64,
    seed: int = 0,
    disable: bool | None = None,
) -> list[DemoRow]:
    """Run the demo and return its table rows (see the module docstring).

    The harness (:class:`~gaussport.evaluation.Evaluator`) runs on the mixture's exact denoiser in
    float64, its moment-matched Gaussian as the warm start, and ``batch`` exact samples of the
    noisy marginal at ``sigma = 80`` (one generator seeded with ``seed``) as initial states; the
    exact endpoints are RK4 solves with 50 steps per unit of ``lambda``.

    Raises:
        ValueError, TypeError: for bad arguments (:func:`check_mixture_demo`), before any solve.
    """
    check_mixture_demo(steps, solver=solver, sigma_skip=sigma_skip, batch=batch, seed=seed)
    target = demo_target()
    x = target.sample(batch, SIGMA_MAX, torch.Generator().manual_seed(seed), dtype=torch.float64)
    ev = Evaluator(
        target,
        target.moments(),
        shape=x.shape[1:],
        seeds=range(batch),
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        model_dtype=torch.float64,
        reference_steps=50,
        initial_states=lambda rows: x[list(rows)],
        disable=disable,
    )
    ev.reference()
    ev.disable = True  # the bar above covers the reference solve; the solver runs are quick
    rows = []
    for n in steps:
        plain = ev.evaluate(solver, steps=n)
        respace = ev.evaluate(solver, steps=n, teleport="respace", sigma_skip=sigma_skip)
        # the paper's Heun setting: teleport onto a level of the grid, keep the grid below it
        on_grid = max(s for s in plain.grid if s <= sigma_skip)  # above 0.002: check_mixture_demo
        truncate = ev.evaluate(solver, steps=n, teleport="truncate", sigma_skip=on_grid)
        rows.append(
            DemoRow(n, plain.nfe, plain.error, respace.nfe, respace.error, truncate.nfe, truncate.error)
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
    """Write the error-vs-NFE plot as a PNG (:func:`~gaussport.evaluation.plot_quality`).

    Returns False (with a log message) without matplotlib.
    """
    truncated = sorted((r.nfe_truncate, r.error_truncate) for r in rows)
    series = [
        Series(f"{solver}, no teleport", [r.nfe_plain for r in rows], [r.error_plain for r in rows]),
        Series(
            f"teleport to {sigma_skip:g} + {solver} (respaced)",
            [r.nfe_respace for r in rows],
            [r.error_respace for r in rows],
            style="s-",
        ),
        Series(
            f"teleport to {sigma_skip:g} + {solver} (truncated grid)",
            [n for n, _ in truncated],
            [e for _, e in truncated],
            style="^--",
        ),
    ]
    return plot_quality(
        series,
        path,
        title="Gaussian-mixture target (d = 32, 6 components)",
        error_label="RMS error to the exact endpoint",
    )
