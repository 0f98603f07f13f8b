"""The evaluation harness: seeds, exact endpoints, NFE budgets, runs with and without a teleport.

One :class:`Evaluator` holds a denoiser (any ``D(x, sigma)``: the user's model), the Gaussian it
teleports with, and a fixed set of seeds. It

* draws the initial noise ``x_T = sigma_max * z`` with **one generator per seed** (as EDM's
  ``StackedRandomGenerator``), so sample ``i`` is the same whatever the batch it is drawn in -- or
  takes the caller's initial states (``initial_states=``);
* computes the **exact ODE endpoints** of those seeds once, with :func:`gaussport.reference_solve`
  (RK4 in ``lambda = -log sigma``, float64 state), and keeps them per seed in memory and optionally
  on disk (:mod:`gaussport.evaluation.endpoints`);
* turns an **NFE budget** into a grid (:meth:`Evaluator.budget`): the largest grid of the family
  (Karras, rho = 7, by default) on which the solver makes at most that many evaluations, counted
  by ``solver.evaluations`` -- single-evaluation solvers take ``NFE`` intervals, two-evaluation
  solvers (Heun, DPM-Solver++(2S)) the largest ``n`` with ``2n - 1 <= NFE``; the NFE actually
  used is reported. ``steps=`` takes the family's grid of that many intervals instead;
* runs a registered solver **with or without a teleport** (:meth:`Evaluator.evaluate`):
  ``"none"``, ``"respace"`` (the same NFE re-spaced over ``[sigma_min, sigma_skip]``, the paper's
  DPM-Solver/UniPC setting) or ``"truncate"`` (the family's grid from ``sigma_max``, the part above
  ``sigma_skip`` replaced by the exact Gaussian flow, the paper's Heun setting: the longest such
  grid that fits the budget); solver options such as ``seed_history=True`` pass through;
* returns the **trajectory error** (:func:`gaussport.metrics.trajectory_error` against the exact
  endpoints of the same seeds: solver and warm-start error, not model error) and, on request, the
  **Frechet distance** in the caller's metric over several seeds
  (:func:`gaussport.metrics.frechet_over_seeds`).

Without a teleport, a solver with an ``ems`` option left at ``None`` (DPM-Solver-v3) is given the
analytic EMS of the same Gaussian (:func:`gaussport.sampling.with_warm_start_statistics`) -- what
it gets after a teleport -- so that "with/without teleport" compares the teleport only.

Example:
    >>> import torch
    >>> from gaussport.analytic import Gaussian
    >>> from gaussport.evaluation import Evaluator
    >>> g = Gaussian(torch.zeros(16), torch.diag(torch.logspace(-3, 0, 16)))  # an exact denoiser
    >>> ev = Evaluator(g, g, shape=(16,), seeds=range(8), reference_steps=4)
    >>> plain = ev.evaluate("heun", 7)
    >>> warm = ev.evaluate("heun", 7, teleport="respace", sigma_skip=2.5)
    >>> plain.nfe, warm.nfe
    (7, 7)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import _deprecation
from .. import grids as _grids
from .._checks import Grid, as_grid
from ..denoiser import CountingDenoiser
from ..metrics import FrechetSummary, frechet_over_seeds, trajectory_error
from ..reference import reference_solve
from ..sampling import Solution, sample, solve, with_warm_start_statistics
from ..solvers import Solver
from ..solvers import get as get_solver
from . import endpoints as _endpoints
from .results import Budget, Calibration, Evaluation

__all__ = ["Budget", "Evaluation", "Calibration", "Evaluator", "TELEPORTS", "SIGMA_MIN", "SIGMA_MAX"]

logger = logging.getLogger("gaussport")

TELEPORTS = ("none", "respace", "truncate")
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


class Evaluator:
    """Fixed seeds, cached exact endpoints, NFE budgets and both quality metrics (module docstring).

    Args:
        denoiser: ``D(x, sigma)`` (VE): the model under test.
        gaussian: the warm start (e.g. a :class:`gaussport.analytic.Gaussian` fitted to the data).
        shape: the sample shape, e.g. ``(3, 32, 32)``.
        seeds: the seeds of the trajectory-error batch (one generator per seed).
        sigma_min: the smallest positive level of every grid (a final step to 0 follows).
        sigma_max: where every trajectory starts.
        family: the grid family (Karras, rho = 7, by default).
        device: where noise, state and model run (the model must already be there).
        model_dtype: the dtype the denoiser receives.
        reference_steps: RK4 steps per unit of ``lambda`` for the exact endpoints.
        frechet_metric: ``samples -> float``, e.g. a Frechet distance in the features of a network
            of the caller's choice (:func:`gaussport.metrics.frechet_distance` of its features and
            those of held-out data); ``None`` disables the Frechet distance.
        frechet_seeds: one generator per seed; each draws ``frechet_samples`` initial states.
        frechet_samples: samples per Frechet seed.
        cache_dir: if given, exact endpoints are also stored there (``.npz``, no pickle).
        fingerprint: identifies the model in the disk cache (default: a hash of its state dict;
            without one the disk cache is not used).
        initial_states: ``seeds -> x_T``, the initial states (at ``sigma_max``) of a tuple of seeds,
            when they are not ``sigma_max * z`` of one generator per seed (e.g. exact samples of an
            analytic target's noisy marginal). Not with ``cache_dir``: the seeds no longer name
            the states.
        disable: hide progress bars.
    """

    def __init__(
        self,
        denoiser: Callable[[Tensor, Tensor], Tensor],
        gaussian: Any,
        *,
        shape: Sequence[int],
        seeds: Iterable[int] = range(128),
        sigma_min: float = SIGMA_MIN,
        sigma_max: float = SIGMA_MAX,
        family: _grids.GridFamily | None = None,
        device: torch.device | str | None = None,
        model_dtype: torch.dtype = torch.float32,
        reference_steps: int = 20,
        frechet_metric: Callable[[Tensor], float] | None = None,
        frechet_seeds: Iterable[int] = (),
        frechet_samples: int = 1000,
        cache_dir: str | os.PathLike[str] | None = None,
        fingerprint: str | None = None,
        initial_states: Callable[[tuple[int, ...]], Tensor] | None = None,
        disable: bool | None = True,
    ) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}.")
        if not isinstance(reference_steps, int) or reference_steps < 1:
            raise ValueError(f"reference_steps must be a positive integer; got {reference_steps!r}.")
        if initial_states is not None and cache_dir is not None:
            raise ValueError(
                "cache_dir stores endpoints by seed, and with initial_states the seeds do not determine "
                "the initial states; drop cache_dir or initial_states."
            )
        self.denoiser = denoiser
        self.gaussian = gaussian
        self.shape = tuple(int(s) for s in shape)
        self.seeds = self._check_seeds(seeds)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.family = family if family is not None else _grids.KarrasFamily(7.0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model_dtype = model_dtype
        self.reference_steps = reference_steps
        self.frechet_metric = frechet_metric
        self.frechet_seeds = tuple(int(s) for s in frechet_seeds)
        if frechet_samples < 2:
            raise ValueError(f"frechet_samples must be at least 2; got {frechet_samples}.")
        self.frechet_samples = int(frechet_samples)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.fingerprint = fingerprint if fingerprint is not None else _endpoints.fingerprint(denoiser)
        self.initial_states = initial_states
        self.disable = disable
        self._ems: dict[Any, Any] = {}  # the Gaussian's analytic EMS, for with_warm_start_statistics
        self.reference_seconds = 0.0
        self._store = _endpoints.EndpointStore(self.shape, self._cache_file(), self.fingerprint)

    @classmethod
    def digits(cls, **kwargs: Any) -> Evaluator:
        """Deprecated: use :func:`gaussport.digits.evaluator` (same keyword arguments)."""
        _deprecation.warn("gaussport.evaluation.Evaluator.digits", "gaussport.digits.evaluator")
        from ..digits.harness import evaluator

        return evaluator(**kwargs)

    @staticmethod
    def _check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
        out = tuple(int(s) for s in seeds)
        if not out:
            raise ValueError("seeds is empty; pass at least one seed (e.g. range(64)).")
        if len(set(out)) != len(out):
            raise ValueError("seeds contain repeats; every seed must be distinct.")
        return out

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None or self.fingerprint is None:
            return None
        name = (
            f"reference-{self.fingerprint[:16]}-{self.sigma_max:g}-{self.sigma_min:g}"
            f"-rk{self.reference_steps}-{self.model_dtype}.npz".replace("torch.", "")
        )
        return self.cache_dir / name

    # ------------------------------------------------------------------ noise and endpoints
    def noise(self, seeds: Iterable[int] | None = None) -> Tensor:
        """The initial states ``x_T`` of ``seeds`` on the device.

        ``sigma_max * z`` with one generator per seed (CPU draws, then moved to the device), or
        ``initial_states(seeds)`` when the evaluator was given one.
        """
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        if self.initial_states is not None:
            return self.initial_states(chosen).to(self.device)
        z = torch.stack([torch.randn(self.shape, generator=torch.Generator().manual_seed(s)) for s in chosen])
        return (self.sigma_max * z).to(self.device)

    def _endpoint_grid(self) -> Grid:
        return (self.sigma_max, self.sigma_min, 0.0)

    def reference(self, seeds: Iterable[int] | None = None) -> Tensor:
        """The exact ODE endpoints (float64, CPU) of ``seeds``; computed once per seed and cached."""
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        missing = [s for s in chosen if s not in self._store]
        if missing:
            t0 = time.perf_counter()
            logger.info(
                "exact endpoints of %d seeds (RK4, %d steps per unit)", len(missing), self.reference_steps
            )
            out = reference_solve(
                self.denoiser,
                self.noise(missing).to(torch.float64),
                self._endpoint_grid(),
                steps_per_unit=self.reference_steps,
                model_dtype=self.model_dtype,
                disable=self.disable,
            )
            self._store.put(missing, out)
            self.reference_seconds += time.perf_counter() - t0
        return self._store.get(chosen)

    def reference_accuracy(self, seeds: Iterable[int]) -> float:
        """RMS difference between the cached endpoints and a solve with twice the RK4 steps."""
        chosen = self._check_seeds(seeds)
        finer = reference_solve(
            self.denoiser,
            self.noise(chosen).to(torch.float64),
            self._endpoint_grid(),
            steps_per_unit=2 * self.reference_steps,
            model_dtype=self.model_dtype,
            disable=self.disable,
        )
        return trajectory_error(self.reference(chosen), finer).rms

    # ------------------------------------------------------------------ budgets
    def budget(
        self,
        solver: Solver | str,
        nfe: int | None = None,
        teleport: str = "none",
        sigma_skip: float | None = None,
        *,
        steps: int | None = None,
    ) -> Budget:
        """The grid for ``nfe`` evaluations of ``solver`` (module docstring: the NFE -> grid rule).

        With ``steps`` instead of ``nfe``: the family's grid of ``steps`` intervals, whatever it
        costs; with a teleport the solver integrates it re-spaced or truncated the same way.

        Raises:
            ValueError: for an unknown teleport mode, a missing or out-of-range ``sigma_skip``,
                neither or both of ``nfe`` and ``steps``, or a budget too small for one step.
        """
        solver_obj = get_solver(solver) if isinstance(solver, str) else solver
        if (nfe is None) == (steps is None):
            raise ValueError(
                "give exactly one of nfe (an evaluation budget) and steps (grid intervals); "
                f"got nfe={nfe!r}, steps={steps!r}."
            )
        which, value = ("nfe", nfe) if steps is None else ("steps", steps)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{which} must be a positive integer; got {value!r}.")
        skip = self._check_teleport(teleport, sigma_skip)
        if steps is not None:
            return self._on_family_grid(solver_obj, steps, teleport, skip)
        assert nfe is not None
        best: Budget | None = None
        # Truncated grids keep only the levels below sigma_skip, so they may need many more levels.
        limit = nfe + 1 if teleport != "truncate" else 8 * nfe + 64
        for n in range(1, limit + 1):
            candidate = self._on_family_grid(solver_obj, n, teleport, skip)
            if candidate.nfe <= nfe:
                best = candidate
        if best is None:
            raise ValueError(
                f"a budget of {nfe} evaluations is too small for one step of {type(solver_obj).__name__}; "
                "raise nfe."
            )
        return best

    def _on_family_grid(self, solver: Solver, n: int, teleport: str, skip: float) -> Budget:
        grid = self.family(n, self.sigma_min, self.sigma_max)
        if teleport == "respace":
            solver_grid = _grids.respace(grid, skip)
        elif teleport == "truncate":
            solver_grid = _grids.truncate(grid, skip)
        else:
            solver_grid = grid
        return Budget(grid, solver_grid, solver.evaluations(solver_grid))

    def _check_teleport(self, teleport: str, sigma_skip: float | None) -> float:
        if teleport not in TELEPORTS:
            raise ValueError(f"teleport must be one of {TELEPORTS}; got {teleport!r}.")
        if teleport == "none":
            if sigma_skip is not None:
                raise ValueError(
                    "sigma_skip was given with teleport='none'; pass teleport='respace' or 'truncate'."
                )
            return self.sigma_max
        if sigma_skip is None:
            raise ValueError(f"teleport={teleport!r} needs sigma_skip, the level to teleport to.")
        skip = float(sigma_skip)
        if not self.sigma_min < skip <= self.sigma_max:
            raise ValueError(
                f"sigma_skip = {skip} must lie in (sigma_min, sigma_max] = "
                f"({self.sigma_min}, {self.sigma_max}]; pick a level inside."
            )
        return skip

    # ------------------------------------------------------------------ running
    def _solver(self, solver: Solver | str, options: dict[str, Any]) -> tuple[Solver, str | None]:
        if isinstance(solver, str):
            return get_solver(solver, **options), solver
        if options:
            raise TypeError("solver options can only be given with a solver name.")
        return solver, None

    def run(
        self,
        solver: Solver | str,
        x: Tensor,
        budget: Budget,
        teleport: str = "none",
        sigma_skip: float | None = None,
        **options: Any,
    ) -> Solution:
        """Sample from ``x`` (at ``sigma_max``) on ``budget`` -- the one sampling call of the harness."""
        solver_obj, _ = self._solver(solver, options)
        with torch.no_grad():
            if teleport == "none":
                # The Gaussian's analytic EMS also without a teleport, so that "with/without
                # teleport" compares the teleport only (module docstring).
                return solve(
                    self.denoiser,
                    x,
                    budget.grid,
                    with_warm_start_statistics(solver_obj, self.gaussian, budget.grid, cache=self._ems),
                    model_dtype=self.model_dtype,
                    disable=self.disable,
                )
            return sample(
                self.denoiser,
                x,
                budget.grid,
                solver_obj,
                warm_start=self.gaussian,
                sigma_skip=self._check_teleport(teleport, sigma_skip),
                teleport=teleport,
                model_dtype=self.model_dtype,
                disable=self.disable,
            )

    def frechet(self, generate: Callable[[Tensor], Tensor]) -> FrechetSummary:
        """The Frechet distance of ``generate(x_T)`` over the Frechet seeds (mean +- seed spread).

        Raises:
            ValueError: without a Frechet metric or Frechet seeds.
        """
        if self.frechet_metric is None or not self.frechet_seeds:
            raise ValueError(
                "this evaluator has no Frechet metric or no frechet_seeds; pass them to Evaluator."
            )

        def draw(gen: torch.Generator) -> Tensor:
            z = torch.randn((self.frechet_samples, *self.shape), generator=gen)
            return generate((self.sigma_max * z).to(self.device)).to("cpu", torch.float32)

        return frechet_over_seeds(draw, self.frechet_seeds, self.frechet_metric)

    def evaluate(
        self,
        solver: str,
        nfe: int | None = None,
        *,
        steps: int | None = None,
        teleport: str = "none",
        sigma_skip: float | None = None,
        seeds: Iterable[int] | None = None,
        frechet: bool = False,
        label: str | None = None,
        **options: Any,
    ) -> Evaluation:
        """Run ``solver`` at a budget of ``nfe`` evaluations (or on ``steps`` intervals) and measure it.

        Args:
            solver: a registered solver name.
            nfe: the evaluation budget (the NFE actually used is in the result).
            steps: instead of ``nfe``, the number of intervals of the family's grid.
            teleport: ``"none"``, ``"respace"`` or ``"truncate"``.
            sigma_skip: the teleport level (required with a teleport).
            seeds: the seeds to measure the trajectory error on (default: the evaluator's).
            frechet: also compute the Frechet distance over the Frechet seeds.
            label: display name (default: the solver name).
            **options: solver options (e.g. ``seed_history=True``).

        Returns:
            An :class:`Evaluation`.
        """
        solver_obj, name = self._solver(solver, options)
        budget = self.budget(solver_obj, nfe, teleport, sigma_skip, steps=steps)
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        reference = self.reference(chosen)
        t0 = time.perf_counter()
        sol = self.run(solver_obj, self.noise(chosen), budget, teleport, sigma_skip)
        seconds = time.perf_counter() - t0
        if sol.nfe != budget.nfe:
            raise RuntimeError(f"{name}: made {sol.nfe} evaluations, evaluations() said {budget.nfe}.")
        fd = None
        if frechet:
            fd = self.frechet(lambda x: self.run(solver_obj, x, budget, teleport, sigma_skip).x)
        return Evaluation(
            label or name or type(solver_obj).__name__,
            name,
            dict(options),
            teleport,
            None if teleport == "none" else float(sigma_skip),  # type: ignore[arg-type]
            nfe if nfe is not None else budget.nfe,
            sol.nfe,
            sol.sigmas,
            trajectory_error(sol.x, reference),
            fd,
            sol.x.detach().to("cpu", torch.float32),
            seconds,
        )

    def evaluate_sampler(
        self,
        label: str,
        sampler: Callable[[Callable[[Tensor, Tensor], Tensor], Tensor, Grid], Tensor],
        grid: Sequence[float],
        *,
        nfe_budget: int | None = None,
        seeds: Iterable[int] | None = None,
        frechet: bool = False,
    ) -> Evaluation:
        """Measure a sampler from another package, ``sampler(denoiser, x, grid) -> x_end``, on ``grid``.

        The denoiser it receives counts its calls (reported as ``nfe``); the seeds, exact endpoints
        and metrics are those of :meth:`evaluate`, so the numbers compare directly.
        """
        grid_t = as_grid(grid)
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        reference = self.reference(chosen)
        counter = CountingDenoiser(self.denoiser)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = sampler(counter, self.noise(chosen), grid_t)
        seconds = time.perf_counter() - t0
        fd = None
        if frechet:
            with torch.no_grad():
                fd = self.frechet(lambda x: sampler(self.denoiser, x, grid_t))
        return Evaluation(
            label,
            None,
            {},
            "none",
            None,
            nfe_budget if nfe_budget is not None else counter.calls,
            counter.calls,
            grid_t,
            trajectory_error(out, reference),
            fd,
            out.detach().to("cpu", torch.float32),
            seconds,
        )

    def evaluate_recipe(
        self,
        recipe: Any,
        solver: str,
        nfe: int,
        *,
        seeds: Iterable[int] | None = None,
        frechet: bool = False,
    ) -> Evaluation:
        """A tuned recipe's entry for ``solver`` at ``nfe``, measured like :meth:`evaluate`'s runs.

        ``recipe`` is a :class:`gaussport.tuning.Recipe` or the path of its file. The run is
        ``gaussport.sample(..., recipe=recipe, nfe=nfe)`` from ``sigma_max`` (the recipe's
        ``sigma_max`` must be the harness's): the teleport to the entry's level, then the solver on
        the entry's grid; same seeds, exact endpoints and Frechet seeds as :meth:`evaluate`. The
        result reports ``teleport="recipe"``, the entry's level and the grid the solver integrated.

        Raises:
            ValueError: for a recipe without that entry, or one tuned from another ``sigma_max``.
        """
        from ..tuning.recipe import load_recipe

        recipe = load_recipe(recipe)
        entry = recipe.entry(solver, nfe)
        start = (self.sigma_max, 0.0)

        def sampler(denoiser: Callable[[Tensor, Tensor], Tensor], x: Tensor, grid: Grid) -> Tensor:
            return sample(
                denoiser,
                x,
                grid,
                solver,
                warm_start=self.gaussian,
                recipe=recipe,
                nfe=nfe,
                model_dtype=self.model_dtype,
                disable=True,
            ).x

        e = self.evaluate_sampler(
            f"{solver} recipe", sampler, start, nfe_budget=nfe, seeds=seeds, frechet=frechet
        )
        return dataclasses.replace(
            e,
            solver=solver,
            options=dict(entry.options),
            teleport="recipe",
            sigma_skip=entry.sigma_skip,
            grid=entry.sigmas,
        )

    def calibrate(
        self,
        solver: str,
        nfe: int,
        candidates: Iterable[float],
        *,
        seeds: Iterable[int],
        teleport: str = "respace",
        **options: Any,
    ) -> Calibration:
        """The candidate teleport level with the lowest trajectory error on ``seeds``.

        Use seeds disjoint from the ones results are reported on, so that the choice is not fitted
        to them (docs/choosing.md#choosing-sigma_skip, step 2: a few calibration trajectories
        against a high-accuracy reference); ties go to the higher level.
        """
        chosen = self._check_seeds(seeds)
        errors = {
            float(c): self.evaluate(
                solver, nfe, teleport=teleport, sigma_skip=float(c), seeds=chosen, **options
            ).error
            for c in candidates
        }
        if not errors:
            raise ValueError("candidates is empty.")
        best = min(sorted(errors, reverse=True), key=lambda c: errors[c])
        return Calibration(best, errors)
