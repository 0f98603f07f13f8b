"""A property-based test kit for PF-ODE solvers: hypothesis strategies, exact problems, contracts.

gaussport's own test suite runs these checks over every registered solver; anyone adding a solver
(here or in another library) can run the same suite::

    from gaussport.testing import check_solver
    check_solver(MySolver())            # raises AssertionError naming the broken contract

The exact oracle is the closed-form Gaussian flow (:meth:`gaussport.analytic.Gaussian.flow`), so
no expected value comes from the code under test. Importing this module needs ``hypothesis``
(``pip install gaussport[test]``).

Contracts (each a function, :func:`check_solver` runs them all):

* :func:`check_constant_exact` -- a constant denoiser ``D = c`` has the exact solution
  ``x(sigma) = c + (x0 - c) sigma / sigma0``, reproduced to round-off by every consistent solver;
* :func:`check_batch_independent` -- a batch gives the same rows as its rows solved one by one;
* :func:`check_dtypes` -- float16/bfloat16/float32/float64 inputs give outputs of the same dtype;
* :func:`check_nfe` -- the evaluations made equal ``solver.evaluations(grid)``;
* :func:`check_rng_untouched` -- deterministic solvers leave the global RNG state alone;
* :func:`check_start_anywhere` -- a run can start at any sigma and converges from there;
* :func:`check_order` -- the measured global order matches the declared ``solver.order`` (with
  exact history, for solvers that can seed it) and ``solver.cold_start_order`` (empty history).

Multistep solvers are measured twice. *Exact history* means the earlier denoised values a multistep
method combines are the exact ones on the solution path: solvers with a ``seed_history`` option
fill them from a :class:`~gaussport.solvers.Teleport` whose model is the problem's Gaussian
(:func:`exact_history_state`), so the measured slope is the method's order. A *cold start* (empty
history, lower-order warm-up steps) is what a plain :func:`gaussport.solve` does; one warm-up step
of local order ``q + 1`` caps the global order at ``q + 1``
(docs/devdocs-derivations.md#warm-up-steps-cap-the-global-order), declared as
``solver.cold_start_order``. :func:`measured_local_order` measures one-step errors (local order =
global order + 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from .. import grids as _grids
from ..analytic import Dense, Diagonal, Gaussian, LowRankPlusIsotropic
from ..denoiser import CountingDenoiser as _CountingDenoiser
from ..sampling import solve
from ..solvers import Solver, Teleport
from ..solvers import get as get_solver

__all__ = [
    "spectra",
    "gaussians",
    "sigma_grids",
    "batch_sizes",
    "random_gaussian",
    "anisotropic_gaussian",
    "gaussian_of_shape",
    "ConstantDenoiser",
    "CountingDenoiser",
    "GaussianProblem",
    "HistoryMode",
    "supports_seeding",
    "exact_history_state",
    "measured_order",
    "measured_local_order",
    "check_constant_exact",
    "check_batch_independent",
    "check_dtypes",
    "check_nfe",
    "check_rng_untouched",
    "check_start_anywhere",
    "check_order",
    "check_solver",
]

# ---------------------------------------------------------------------------- strategies


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high), allow_nan=False).map(lambda e: 10.0**e)


def spectra(
    min_dim: int = 1, max_dim: int = 8, *, low: float = 1e-3, high: float = 10.0, zeros: bool = False
) -> st.SearchStrategy[list[float]]:
    """Eigenvalue lists, log-uniform in ``[low, high]``.

    With ``zeros``, some entries are exactly 0 (rank-deficient covariances).
    """
    value = st.one_of(_log_uniform(low, high), st.just(0.0)) if zeros else _log_uniform(low, high)
    return st.integers(min_dim, max_dim).flatmap(lambda d: st.lists(value, min_size=d, max_size=d))


def random_gaussian(spectrum: Sequence[float], seed: int = 0, *, representation: str = "dense") -> Gaussian:
    """A float64 Gaussian with the given eigenvalues, a random orthonormal basis and a random mean.

    ``representation``: ``"dense"``, ``"diagonal"`` (axis-aligned) or ``"lowrank"`` (the nonzero
    eigenpairs explicit, zero residual -- rank deficient when the spectrum has zeros).
    """
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor(list(spectrum), dtype=torch.float64)
    d = lam.numel()
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    if representation == "diagonal":
        return Gaussian(mean, Diagonal(lam))
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    if representation == "dense":
        return Gaussian(mean, Dense(lam, basis))
    if representation == "lowrank":
        keep = lam > 0
        return Gaussian(mean, LowRankPlusIsotropic(lam[keep], basis[:, keep], 0.0))
    raise ValueError(f"unknown representation {representation!r}.")


def gaussians(
    min_dim: int = 1, max_dim: int = 8, *, zeros: bool = False, representation: str = "dense"
) -> st.SearchStrategy[Gaussian]:
    """Random float64 Gaussians (see :func:`random_gaussian`)."""
    return st.builds(
        lambda spec, seed: random_gaussian(spec, seed, representation=representation),
        spectra(min_dim, max_dim, zeros=zeros),
        st.integers(0, 2**31 - 1),
    )


def sigma_grids(
    min_steps: int = 1,
    max_steps: int = 12,
    *,
    sigma_min: float = 1e-2,
    sigma_max: float = 80.0,
    end_in_zero: bool | None = None,
    max_ratio: float = 4.0,
) -> st.SearchStrategy[tuple[float, ...]]:
    """Strictly decreasing grids of ``min_steps..max_steps`` intervals starting anywhere.

    Adjacent positive levels differ by a factor in ``[1.05, max_ratio]``; the first level is drawn
    log-uniformly from ``[sigma_min, sigma_max]`` (raised if the gaps need more room); the grid ends
    in 0 always, never, or either (``end_in_zero=None``).
    """

    def build(gaps: list[float], top: float, zero: bool) -> tuple[float, ...]:
        top = max(top, sigma_min * math.exp(sum(gaps)))
        levels = [top]
        for gap in gaps:
            levels.append(levels[-1] / math.exp(gap))
        return tuple(levels) + ((0.0,) if zero else ())

    gap = st.floats(math.log(1.05), math.log(max_ratio))
    zeros = st.booleans() if end_in_zero is None else st.just(end_in_zero)
    return st.builds(
        build, st.lists(gap, min_size=0, max_size=max_steps), _log_uniform(sigma_min, sigma_max), zeros
    ).filter(lambda g: min_steps <= len(g) - 1 <= max_steps)


def batch_sizes(max_size: int = 4) -> st.SearchStrategy[int]:
    return st.integers(1, max_size)


# ---------------------------------------------------------------------------- problems


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


# ---------------------------------------------------------------------------- contracts


def _max_rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_constant_exact(solver: Solver | str, *, examples: int = 25) -> None:
    """Exact on a constant denoiser (any grid, any start, ending in 0 or not) to 1e-12 relative."""
    solver = _as_solver(solver)

    @settings(max_examples=examples, deadline=None, derandomize=True)
    @given(grid=sigma_grids(1, 10), seed=st.integers(0, 1000))
    def run(grid: tuple[float, ...], seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        c = torch.randn(3, 5, generator=gen, dtype=torch.float64)
        x = c + grid[0] * torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
        out = solve(ConstantDenoiser(c), x, grid, solver, disable=True).x
        exact = c + (x - c) * (grid[-1] / grid[0])
        err = _max_rel(out, exact)
        assert err < 1e-12, (
            f"{_name(solver)} is not exact on a constant denoiser over {grid}: rel. error {err:.2e}"
        )

    run()


def check_batch_independent(solver: Solver | str, *, examples: int = 10) -> None:
    """Each row of a batch equals that row solved alone (nonlinear denoiser, 1e-12 relative)."""
    from ..analytic import anisotropic_mixture

    solver = _as_solver(solver)
    mixture = anisotropic_mixture(dim=6, n_components=3, seed=1)

    @settings(max_examples=examples, deadline=None, derandomize=True)
    @given(grid=sigma_grids(1, 8), batch=st.integers(2, 4), seed=st.integers(0, 1000))
    def run(grid: tuple[float, ...], batch: int, seed: int) -> None:
        x = mixture.sample(batch, grid[0], torch.Generator().manual_seed(seed), dtype=torch.float64)
        together = solve(mixture, x, grid, solver, disable=True).x
        for b in range(batch):
            alone = solve(mixture, x[b : b + 1], grid, solver, disable=True).x
            err = _max_rel(together[b : b + 1], alone)
            assert err < 1e-12, f"{_name(solver)}: row {b} depends on the rest of the batch (rel. {err:.2e})"

    run()


def check_dtypes(solver: Solver | str) -> None:
    """float16/bfloat16/float32/float64 inputs give finite outputs of the same dtype."""
    solver = _as_solver(solver)
    g = anisotropic_gaussian(dim=8)
    grid = _grids.karras(6, 0.01, 10.0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = g.sample(3, 10.0, torch.Generator().manual_seed(0), dtype=dtype)
        out = solve(g, x, grid, solver, disable=True).x
        assert out.dtype == dtype, f"{_name(solver)}: {dtype} input gave {out.dtype} output"
        assert bool(torch.isfinite(out.float()).all()), f"{_name(solver)}: non-finite output for {dtype}"


def check_nfe(solver: Solver | str, *, examples: int = 20) -> None:
    """The reported and the counted evaluations equal ``solver.evaluations(grid)``."""
    solver = _as_solver(solver)
    g = anisotropic_gaussian(dim=4)

    @settings(max_examples=examples, deadline=None, derandomize=True)
    @given(grid=sigma_grids(1, 10))
    def run(grid: tuple[float, ...]) -> None:
        counter = CountingDenoiser(g)
        x = g.sample(2, grid[0], torch.Generator().manual_seed(0), dtype=torch.float64)
        sol = solve(counter, x, grid, solver, disable=True)
        declared = solver.evaluations(grid)
        assert sol.nfe == counter.calls == declared, (
            f"{_name(solver)} on {grid}: declared {declared} evaluations, "
            f"reported {sol.nfe}, made {counter.calls}"
        )
        assert all(s > 0 for s in counter.sigmas), f"{_name(solver)} evaluated the denoiser at sigma = 0"

    run()


def check_rng_untouched(solver: Solver | str) -> None:
    """A deterministic solve leaves the global RNG state unchanged."""
    solver = _as_solver(solver)
    g = anisotropic_gaussian(dim=4)
    x = g.sample(2, 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    before = torch.get_rng_state()
    solve(g, x, _grids.karras(5, 0.01, 10.0), solver, disable=True)
    assert torch.equal(before, torch.get_rng_state()), f"{_name(solver)} consumed the global RNG"


def check_start_anywhere(solver: Solver | str, *, starts: Sequence[float] = (0.7, 3.3, 17.0)) -> None:
    """From the exact state at any start level the error vs the exact flow falls as steps double."""
    solver = _as_solver(solver)
    problem = GaussianProblem(anisotropic_gaussian(dim=8))
    for start in starts:
        errors = [
            problem.error(solver, _grids.exponential(n + 1, 0.05, start, append_zero=False))
            for n in (8, 16, 32)
        ]
        assert all(math.isfinite(e) for e in errors), f"{_name(solver)}: non-finite error starting at {start}"
        assert errors[2] < errors[1] < errors[0], (
            f"{_name(solver)} does not converge when started at sigma = {start}: errors {errors}"
        )


def check_order(solver: Solver | str, *, tolerance: float = 0.3, **kwargs: Any) -> dict[str, float]:
    """Measured global orders match the declared ones to ``tolerance``.

    * cold start (empty history): ``|measured - solver.cold_start_order| < tolerance``;
    * exact history, for solvers with a ``seed_history`` option: ``|measured - solver.order| < tolerance``.

    ``kwargs`` go to :func:`measured_order` (``family=``, ``steps=``, ...). Returns the measured
    orders by history (``{"cold": ..., "exact": ...}``).
    """
    solver = _as_solver(solver)
    declared = {"cold": getattr(solver, "cold_start_order", solver.order), "exact": solver.order}
    histories = ("cold", "exact") if supports_seeding(solver) else ("cold",)
    measured = {}
    for history in histories:
        measured[history] = order = measured_order(solver, history=history, **kwargs)
        assert abs(order - declared[history]) < tolerance, (
            f"{_name(solver)} declares order {declared[history]} ({history} history) but measures {order:.2f}"
        )
    return measured


def check_solver(solver: Solver | str, *, order: bool = True) -> None:
    """Run every contract check on ``solver`` (raises ``AssertionError`` naming the failure)."""
    solver = _as_solver(solver)
    check_constant_exact(solver)
    check_batch_independent(solver)
    check_dtypes(solver)
    check_nfe(solver)
    check_rng_untouched(solver)
    check_start_anywhere(solver)
    if order:
        check_order(solver)
