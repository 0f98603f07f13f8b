"""The contracts every solver fulfils, each a function raising AssertionError; check_solver runs all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from .. import grids as _grids
from ..sampling import solve
from ..solvers import Solver
from .problems import (
    ConstantDenoiser,
    CountingDenoiser,
    GaussianProblem,
    _as_solver,
    _name,
    anisotropic_gaussian,
    measured_order,
    supports_seeding,
)
from .strategies import sigma_grids


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
