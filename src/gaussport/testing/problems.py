"""Exact test problems, exact multistep history and measured convergence orders."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .. import grids as _grids
from ..analytic import Dense, Gaussian
from ..denoiser import CountingDenoiser as _CountingDenoiser
from ..sampling import solve
from ..solvers import Solver, Teleport
from ..solvers import get as get_solver
from .strategies import random_gaussian


def anisotropic_gaussian(dim: int = 16, *, low: float = 1e-3, high: float = 4.0, seed: int = 0) -> Gaussian:
    """The standard order-test problem: eigenvalues log-spaced over ``[low, high]`` (no solver is
    accidentally exact), random basis and mean, float64."""
    spectrum = torch.logspace(math.log10(high), math.log10(low), dim, dtype=torch.float64).tolist()
    return random_gaussian(spectrum, seed)


def gaussian_of_shape(
    shape: Sequence[int], *, seed: int = 0, high: float = 2.0, low: float = 1e-3, mean_scale: float = 0.3
) -> Gaussian:
    """A float64 Gaussian over samples of ``shape`` (e.g. ``(4, 8, 8)`` latents): random orthonormal
    basis, eigenvalues log-spaced over ``[low, high]``, mean ``mean_scale * N(0, I)``.

    The data model of the Gaussian-exact networks in :mod:`gaussport.testing.diffusers`.
    """
    d = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    lam = torch.exp(torch.linspace(math.log(high), math.log(low), d, dtype=torch.float64))
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    mean = mean_scale * torch.randn(d, generator=gen, dtype=torch.float64)
    return Gaussian(mean.reshape(tuple(shape)), Dense(lam, basis))


class ConstantDenoiser:
    """``D(x, sigma) = c``: the PF-ODE solution is ``c + (x0 - c) sigma / sigma0``."""

    def __init__(self, value: Tensor) -> None:
        self.value = value

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.value.to(device=x.device, dtype=x.dtype).expand_as(x).clone()


class CountingDenoiser(_CountingDenoiser):
    """:class:`gaussport.denoiser.CountingDenoiser` recording the sigmas of its calls (for tests)."""

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__(denoiser, record_sigmas=True)


HistoryMode = Literal["cold", "exact"]
"""How a multistep solver's history starts: empty (``"cold"``) or exact (``"exact"``)."""


@dataclass(frozen=True)
class GaussianProblem:
    """A solver test problem with a closed-form answer: Gaussian data, exact states on the path."""

    gaussian: Gaussian
    batch: int = 4
    seed: int = 0

    def state(self, sigma: float, dtype: torch.dtype = torch.float64) -> Tensor:
        """Exact samples of the noisy marginal at ``sigma`` (seeded)."""
        gen = torch.Generator().manual_seed(self.seed)
        return self.gaussian.sample(self.batch, sigma, gen, dtype=dtype)

    def exact(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        return self.gaussian.flow(x, sigma_from, sigma_to)

    def error(self, solver: Solver, sigmas: Sequence[float], *, history: HistoryMode = "cold") -> float:
        """Max relative error of ``solver`` over ``sigmas`` against the exact flow (float64).

        ``history="exact"`` starts from :func:`exact_history_state` (solvers that cannot seed
        history start cold either way).
        """
        x = self.state(sigmas[0])
        state = None
        if history == "exact" and supports_seeding(solver):
            solver, state = exact_history_state(solver, self.gaussian, x, sigmas)
        out = solve(self.gaussian, x, sigmas, solver, disable=True, state=state).x
        ref = self.exact(x, sigmas[0], sigmas[-1])
        return _rel_rows(out, ref)


def _rel_rows(out: Tensor, ref: Tensor) -> float:
    return float(((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max())


def values_combined(solver: Solver) -> int:
    """How many model values one step of ``solver`` combines: ``solver_order`` of DPM-Solver++, UniPC
    and DPM-Solver-v3, ``adams_bashforth`` of iPNDM, 1 for every other solver.

    A multistep solver keeps ``values_combined(solver) - 1`` earlier values in its history.
    """
    options = (
        {f.name: getattr(solver, f.name) for f in dataclasses.fields(solver)}
        if dataclasses.is_dataclass(solver)
        else {}
    )
    return int(options.get("adams_bashforth", options.get("solver_order", 1)))


def supports_seeding(solver: Solver) -> bool:
    """Whether ``solver`` can seed its history from a warm start (it has a ``seed_history`` option)."""
    return dataclasses.is_dataclass(solver) and "seed_history" in {f.name for f in dataclasses.fields(solver)}


def exact_history_state(
    solver: Solver, gaussian: Any, x: Tensor, sigmas: Sequence[float]
) -> tuple[Solver, Any]:
    """The solver with ``seed_history=True`` and its initial state holding *exact* history.

    The history is seeded, as after an analytic warm start, from a
    :class:`~gaussport.solvers.Teleport` at ``sigmas[0]`` whose model is ``gaussian``: the denoised
    values on the exact path through ``x`` at the levels above ``sigmas[0]`` (the grid's first step
    continued upwards). When ``gaussian`` is also the denoiser being integrated, these are the exact
    earlier values a multistep method assumes.

    Raises:
        TypeError: if the solver has no ``seed_history`` option.
    """
    if not supports_seeding(solver):
        raise TypeError(f"{_name(solver)} has no seed_history option; it cannot start with exact history.")
    seeded = dataclasses.replace(solver, seed_history=True)  # type: ignore[type-var]
    grid = tuple(float(s) for s in sigmas)
    return seeded, seeded.init(x, grid, Teleport(gaussian, grid[0], x, grid[0]))


def _as_solver(solver: Solver | str) -> Solver:
    return get_solver(solver) if isinstance(solver, str) else solver


def _name(solver: Solver) -> str:
    return type(solver).__name__


def measured_order(
    solver: Solver | str,
    problem: GaussianProblem | None = None,
    *,
    sigma_max: float = 3.0,
    sigma_min: float = 0.05,
    steps: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024, 2048),
    family: _grids.GridFamily | None = None,
    floor: float = 1e-11,
    history: HistoryMode = "cold",
) -> float:
    """The global convergence order: slope of ``log error`` against ``log steps``.

    Errors against the exact Gaussian flow on grids of the given family (log-uniform by default)
    from ``sigma_max`` to ``sigma_min > 0`` -- a final step to 0 has a fixed size and would never
    converge. The slope is fitted to the last three step counts whose error is above ``floor``
    (round-off), i.e. the asymptotic range. ``history``: ``"cold"`` (empty history, as
    :func:`gaussport.solve` runs) or ``"exact"`` (:func:`exact_history_state`).

    ``sigma_max`` is kept where every direction of the default problem is active (eigenvalues up
    to 4): started at sigma = 20, where ``D`` hardly changes, a cold start's first-order warm-up
    step contributes so little that a multistep method's asymptotic order 2 shows only beyond a
    few thousand steps (``dpmpp_3m_fixed`` on Karras grids: slope 2.7 at 256 steps, 2.08 at 4096).
    """
    solver = _as_solver(solver)
    problem = problem or GaussianProblem(anisotropic_gaussian())
    family = family or _grids.ExponentialFamily()
    points = []
    for n in steps:
        err = problem.error(solver, family(n + 1, sigma_min, sigma_max, append_zero=False), history=history)
        if err > floor:
            points.append((math.log(n), math.log(err)))
    return -_fit_slope(points[-3:], solver, floor)


def _fit_slope(points: list[tuple[float, float]], solver: Solver, floor: float) -> float:
    if len(points) < 2:
        raise AssertionError(f"{_name(solver)}: error below {floor} already at few steps; use fewer steps.")
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sum((p[0] - mx) ** 2 for p in points)


def measured_local_order(
    solver: Solver | str,
    problem: GaussianProblem | None = None,
    *,
    sigma: float = 1.0,
    h: float = 0.4,
    halvings: int = 5,
    corrected: Callable[[Any], Tensor] | None = None,
    floor: float = 1e-13,
) -> float:
    """The local order: slope of ``log`` one-step error against ``log h`` with exact history.

    One step from the exact state at ``sigma`` to ``sigma e^{-h}`` (``h`` in ``lambda = -log sigma``),
    with the history seeded exactly (:func:`exact_history_state`; solvers without it start cold)
    at levels continuing the step upwards (``sigma e^{jh}`` for the exponential integrators);
    ``h`` is halved ``halvings`` times and the slope fitted to the last three errors above
    ``floor``. A method of global order ``p`` has local order ``p + 1``.

    ``corrected``: for predictor-corrector methods that correct the state at ``sigma e^{-h}`` only
    when the next step starts (UniPC), a function of the solver state after a *second* step
    returning the corrected state at ``sigma e^{-h}``; the error of that value is measured.
    """
    solver = _as_solver(solver)
    problem = problem or GaussianProblem(anisotropic_gaussian())
    points = []
    for k in range(halvings + 1):
        step = h / 2**k
        grid = tuple(sigma * math.exp(-j * step) for j in range(3 if corrected else 2))
        x = problem.state(sigma)
        run_solver, state = solver, None
        if supports_seeding(solver):
            run_solver, state = exact_history_state(solver, problem.gaussian, x, grid)
        sol = solve(problem.gaussian, x, grid, run_solver, disable=True, state=state)
        out = corrected(sol.state) if corrected else sol.x
        err = _rel_rows(out, problem.exact(x, sigma, grid[1]))
        if err > floor:
            points.append((math.log(step), math.log(err)))
    return _fit_slope(points[-3:], solver, floor)
