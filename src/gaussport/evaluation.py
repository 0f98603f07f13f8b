"""The evaluation harness every digits benchmark and the demo use: seeds, exact endpoints, budgets, metrics.

One :class:`Evaluator` holds a model, the Gaussian it teleports with, and a fixed set of seeds. It

* draws the initial noise ``x_T = sigma_max * z`` with **one generator per seed** (as EDM's
  ``StackedRandomGenerator``), so sample ``i`` is the same image whatever the batch it is drawn in;
* computes the **exact ODE endpoints** of those seeds once, with :func:`gaussport.reference_solve`
  (RK4 in ``lambda = -log sigma``, float64 state), caches them per seed in memory and optionally
  on disk (``.npz``, read with ``allow_pickle=False``, keyed by a fingerprint of the weights);
* turns an **NFE budget** into a grid (:meth:`Evaluator.budget`): the largest grid of the family
  (Karras, rho = 7, by default) on which the solver makes at most that many evaluations, counted
  by ``solver.evaluations`` -- single-evaluation solvers take ``NFE`` intervals, two-evaluation
  solvers (Heun, DPM-Solver++(2S)) the largest ``n`` with ``2n - 1 <= NFE``; the NFE actually
  used is reported;
* runs a registered solver **with or without a teleport** (:meth:`Evaluator.evaluate`):
  ``"none"``, ``"respace"`` (the same NFE re-spaced over ``[sigma_min, sigma_skip]``, the paper's
  DPM-Solver/UniPC setting) or ``"truncate"`` (the family's grid from ``sigma_max``, the part above
  ``sigma_skip`` replaced by the exact Gaussian flow, the paper's Heun setting: the longest such
  grid that fits the budget); solver options such as ``seed_history=True`` pass through;
* returns the **trajectory error** (:func:`gaussport.metrics.trajectory_error` against the exact
  endpoints of the same seeds: solver and warm-start error, not model error) and, on request, the
  **Frechet distance** over several seeds (:func:`gaussport.metrics.frechet_over_seeds`).

Without a teleport, a solver with an ``ems`` option left at ``None`` (DPM-Solver-v3) is given the
analytic EMS of the same Gaussian -- what it builds itself after a teleport -- so that
"with/without teleport" compares the teleport only.

Example:
    >>> from gaussport.evaluation import Evaluator
    >>> ev = Evaluator.digits(seeds=range(8), reference_steps=4)
    >>> plain = ev.evaluate("heun", 7)
    >>> warm = ev.evaluate("heun", 7, teleport="respace", sigma_skip=2.5)
    >>> plain.nfe, warm.nfe
    (7, 7)
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import grids as _grids
from ._checks import Grid, as_grid
from .metrics import FrechetSummary, TrajectoryError, frechet_over_seeds, trajectory_error
from .reference import reference_solve
from .sampling import Solution, sample, solve, with_warm_start_statistics
from .solvers import Solver
from .solvers import get as get_solver

__all__ = [
    "Budget",
    "Evaluation",
    "Calibration",
    "Evaluator",
    "TELEPORTS",
    "nfe_to_reach",
    "velocity_error",
    "safe_level",
    "markdown_table",
    "plot_quality",
    "plot_heatmap",
    "save_sample_panels",
]

logger = logging.getLogger("gaussport")

TELEPORTS = ("none", "respace", "truncate")
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
CACHE_FORMAT = "gaussport.reference_endpoints"


@dataclass(frozen=True)
class Budget:
    """A grid for an NFE budget.

    Attributes:
        grid: the caller's grid (from ``sigma_max``), what :func:`gaussport.sample` receives.
        solver_grid: what the solver integrates (``grid`` itself without a teleport).
        nfe: the evaluations the solver makes on ``solver_grid`` (at most the budget).
    """

    grid: Grid
    solver_grid: Grid
    nfe: int


@dataclass(frozen=True)
class Evaluation:
    """One solver configuration at one budget, measured on the evaluator's seeds.

    Attributes:
        label: a display name (the solver name unless given).
        solver: the registered solver name, or ``None`` for an external sampler.
        options: the solver options used.
        teleport: ``"none"``, ``"respace"`` or ``"truncate"``.
        sigma_skip: the teleport level (``None`` without a teleport).
        nfe_budget: the requested budget.
        nfe: the evaluations actually made per sample.
        grid: the grid the solver integrated.
        trajectory: distance to the exact endpoints of the same seeds.
        frechet: Frechet distance over the evaluator's Frechet seeds, if requested.
        samples: the final samples of the seeds (CPU, float32).
        seconds: wall time of the sampling (reference solves excluded).
    """

    label: str
    solver: str | None
    options: dict[str, Any]
    teleport: str
    sigma_skip: float | None
    nfe_budget: int
    nfe: int
    grid: Grid
    trajectory: TrajectoryError
    frechet: FrechetSummary | None = None
    samples: Tensor | None = field(default=None, repr=False)
    seconds: float = 0.0

    @property
    def error(self) -> float:
        """The trajectory error: RMS over samples and pixels of ``x - x_exact``."""
        return self.trajectory.rms

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable record (no tensors)."""
        return {
            "label": self.label,
            "solver": self.solver,
            "options": {k: v for k, v in self.options.items() if k != "ems"},
            "teleport": self.teleport,
            "sigma_skip": self.sigma_skip,
            "nfe_budget": self.nfe_budget,
            "nfe": self.nfe,
            "grid": list(self.grid),
            "trajectory_rms": self.trajectory.rms,
            "trajectory_mean": self.trajectory.mean,
            "trajectory_max": self.trajectory.max,
            "frechet": None if self.frechet is None else list(self.frechet.values),
            "frechet_mean": None if self.frechet is None else self.frechet.mean,
            "frechet_std": None if self.frechet is None else self.frechet.std,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Calibration:
    """The teleport level with the lowest trajectory error among candidates, on calibration seeds.

    Attributes:
        best: the chosen level.
        errors: trajectory error (RMS) per candidate level.
    """

    best: float
    errors: dict[float, float]


def _fingerprint(module: Any) -> str | None:
    """A SHA-256 of a module's state dict (names, shapes, dtypes, values), or ``None``."""
    state = getattr(module, "state_dict", None)
    if not callable(state):
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(state().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


class _Counting:
    """A denoiser wrapper that counts batched calls (for samplers outside gaussport)."""

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        return self.denoiser(x, sigma)


class Evaluator:
    """Fixed seeds, cached exact endpoints, NFE budgets and both quality metrics (module docstring).

    Args:
        denoiser: ``D(x, sigma)`` (VE), e.g. :func:`gaussport.models.load_digits_denoiser`.
        gaussian: the warm start (a :class:`gaussport.analytic.Gaussian` fitted to the data).
        shape: the sample shape, e.g. ``(1, 8, 8)``.
        seeds: the seeds of the trajectory-error batch (one generator per seed).
        sigma_min: the smallest positive level of every grid (a final step to 0 follows).
        sigma_max: where every trajectory starts.
        family: the grid family (Karras, rho = 7, by default).
        device: where noise, state and model run (the model must already be there).
        model_dtype: the dtype the denoiser receives.
        reference_steps: RK4 steps per unit of ``lambda`` for the exact endpoints.
        frechet_metric: ``samples -> float`` (e.g. :func:`gaussport.metrics.digits_frechet_distance`);
            ``None`` disables the Frechet distance.
        frechet_seeds: one generator per seed; each draws ``frechet_samples`` initial states.
        frechet_samples: samples per Frechet seed.
        cache_dir: if given, exact endpoints are also stored there (``.npz``, no pickle).
        fingerprint: identifies the model in the disk cache (default: a hash of its state dict;
            without one the disk cache is not used).
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
        disable: bool | None = True,
    ) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}.")
        if not isinstance(reference_steps, int) or reference_steps < 1:
            raise ValueError(f"reference_steps must be a positive integer; got {reference_steps!r}.")
        self.denoiser = denoiser
        self.gaussian = gaussian
        self.shape = tuple(int(s) for s in shape)
        self.seeds = self._check_seeds(seeds)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.family = family if family is not None else _grids.Karras(7.0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model_dtype = model_dtype
        self.reference_steps = reference_steps
        self.frechet_metric = frechet_metric
        self.frechet_seeds = tuple(int(s) for s in frechet_seeds)
        if frechet_samples < 2:
            raise ValueError(f"frechet_samples must be at least 2; got {frechet_samples}.")
        self.frechet_samples = int(frechet_samples)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.fingerprint = fingerprint if fingerprint is not None else _fingerprint(denoiser)
        self.disable = disable
        self._endpoints: dict[int, Tensor] = {}
        self._ems: dict[tuple[float, float, int], Any] = {}  # analytic EMS of the Gaussian, by range
        self.reference_seconds = 0.0
        self._load_cache()

    # ------------------------------------------------------------------ construction
    @classmethod
    def digits(
        cls,
        *,
        directory: str | os.PathLike[str] | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> Evaluator:
        """An evaluator for the shipped 8x8-digits model (or one trained into ``directory``).

        The denoiser is the unconditional :func:`~gaussport.models.load_digits_denoiser`, the warm
        start :func:`~gaussport.models.load_digits_gaussian`, the Frechet metric
        :func:`~gaussport.metrics.digits_frechet_distance` (shipped classifier, held-out test split).
        Keyword arguments are those of :class:`Evaluator`.
        """
        from .metrics import digits_frechet_distance
        from .models import load_digits_denoiser, load_digits_gaussian

        net = load_digits_denoiser(device=device, directory=directory)
        gaussian = load_digits_gaussian(directory=directory)
        where = None if directory is None else os.fspath(directory)

        def metric(samples: Tensor) -> float:
            return digits_frechet_distance(samples, directory=where)

        kwargs.setdefault("frechet_metric", metric)
        return cls(net, gaussian, shape=(1, 8, 8), device=device, **kwargs)

    @staticmethod
    def _check_seeds(seeds: Iterable[int]) -> tuple[int, ...]:
        out = tuple(int(s) for s in seeds)
        if not out:
            raise ValueError("seeds is empty; pass at least one seed (e.g. range(64)).")
        if len(set(out)) != len(out):
            raise ValueError("seeds contain repeats; every seed must be distinct.")
        return out

    # ------------------------------------------------------------------ noise and endpoints
    def noise(self, seeds: Iterable[int] | None = None) -> Tensor:
        """``x_T = sigma_max * z``, one generator per seed (CPU draws, then moved to the device)."""
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        z = torch.stack([torch.randn(self.shape, generator=torch.Generator().manual_seed(s)) for s in chosen])
        return (self.sigma_max * z).to(self.device)

    def _endpoint_grid(self) -> Grid:
        return (self.sigma_max, self.sigma_min, 0.0)

    def reference(self, seeds: Iterable[int] | None = None) -> Tensor:
        """The exact ODE endpoints (float64, CPU) of ``seeds``; computed once per seed and cached."""
        chosen = self.seeds if seeds is None else self._check_seeds(seeds)
        missing = [s for s in chosen if s not in self._endpoints]
        if missing:
            t0 = time.perf_counter()
            logger.info(
                "exact endpoints of %d seeds (RK4, %d steps per unit)", len(missing), self.reference_steps
            )
            x = self.noise(missing).to(torch.float64)
            out = reference_solve(
                self.denoiser,
                x,
                self._endpoint_grid(),
                steps_per_unit=self.reference_steps,
                model_dtype=self.model_dtype,
                disable=self.disable,
            )
            for s, e in zip(missing, out.to("cpu", torch.float64), strict=True):
                self._endpoints[s] = e
            self.reference_seconds += time.perf_counter() - t0
            self._save_cache()
        return torch.stack([self._endpoints[s] for s in chosen])

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

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None or self.fingerprint is None:
            return None
        name = (
            f"reference-{self.fingerprint[:16]}-{self.sigma_max:g}-{self.sigma_min:g}"
            f"-rk{self.reference_steps}-{self.model_dtype}.npz".replace("torch.", "")
        )
        return self.cache_dir / name

    def _load_cache(self) -> None:
        path = self._cache_file()
        if path is None or not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                if (
                    str(data["gaussport_format"]) != CACHE_FORMAT
                    or str(data["fingerprint"]) != self.fingerprint
                ):
                    raise ValueError("not a cache of this model")
                seeds, endpoints = data["seeds"], data["endpoints"]
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring the endpoint cache %s (%s)", path, exc)
            return
        if endpoints.shape[1:] != self.shape:
            logger.warning("ignoring the endpoint cache %s (sample shape %s)", path, endpoints.shape[1:])
            return
        for s, e in zip(seeds.tolist(), endpoints, strict=True):
            self._endpoints[int(s)] = torch.from_numpy(np.array(e, dtype=np.float64))
        logger.info("loaded %d exact endpoints from %s", len(seeds), path)

    def _save_cache(self) -> None:
        path = self._cache_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        seeds = sorted(self._endpoints)
        tmp = path.with_suffix(".tmp.npz")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                gaussport_format=np.array(CACHE_FORMAT),
                fingerprint=np.array(self.fingerprint),
                seeds=np.array(seeds, dtype=np.int64),
                endpoints=torch.stack([self._endpoints[s] for s in seeds]).numpy(),
            )
        os.replace(tmp, path)

    # ------------------------------------------------------------------ budgets
    def budget(
        self,
        solver: Solver | str,
        nfe: int,
        teleport: str = "none",
        sigma_skip: float | None = None,
    ) -> Budget:
        """The grid for ``nfe`` evaluations of ``solver`` (module docstring: the NFE -> grid rule).

        Raises:
            ValueError: for an unknown teleport mode, a missing or out-of-range ``sigma_skip``, or
                a budget too small for one step of the solver.
        """
        solver_obj = get_solver(solver) if isinstance(solver, str) else solver
        if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
            raise ValueError(f"nfe must be a positive integer; got {nfe!r}.")
        skip = self._check_teleport(teleport, sigma_skip)
        best: Budget | None = None
        # Truncated grids keep only the levels below sigma_skip, so they may need many more levels.
        limit = nfe + 1 if teleport != "truncate" else 8 * nfe + 64
        for n in range(1, limit + 1):
            grid = self.family(n, self.sigma_min, self.sigma_max)
            if teleport == "respace":
                solver_grid = _grids.respace(grid, skip)
            elif teleport == "truncate":
                solver_grid = _grids.truncate(grid, skip)
            else:
                solver_grid = grid
            used = solver_obj.evaluations(solver_grid)
            if used <= nfe:
                best = Budget(grid, solver_grid, used)
        if best is None:
            raise ValueError(
                f"a budget of {nfe} evaluations is too small for one step of {type(solver_obj).__name__}; "
                "raise nfe."
            )
        return best

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
        nfe: int,
        *,
        teleport: str = "none",
        sigma_skip: float | None = None,
        seeds: Iterable[int] | None = None,
        frechet: bool = False,
        label: str | None = None,
        **options: Any,
    ) -> Evaluation:
        """Run ``solver`` at a budget of ``nfe`` evaluations and measure it.

        Args:
            solver: a registered solver name.
            nfe: the evaluation budget (the NFE actually used is in the result).
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
        budget = self.budget(solver_obj, nfe, teleport, sigma_skip)
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
            nfe,
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
        counter = _Counting(self.denoiser)
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

        Use seeds disjoint from the ones results are reported on (method.md §4.4 step 2: a few
        calibration trajectories against a high-accuracy reference); ties go to the higher level.
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


# ---------------------------------------------------------------------- reporting helpers
def nfe_to_reach(nfes: Sequence[int], errors: Sequence[float], level: float) -> float:
    """The smallest NFE at which ``errors`` (measured at ``nfes``) reach ``level``.

    Log-log interpolation between the two measured points around the crossing; the first measured
    NFE if it is already below; ``inf`` if never reached.
    """
    pts = sorted((n, e) for n, e in zip(nfes, errors, strict=True) if math.isfinite(e) and e > 0)
    for k, (n, e) in enumerate(pts):
        if e <= level:
            if k == 0:
                return float(n)
            n0, e0 = pts[k - 1]
            if e0 == e:
                return float(n)
            f = (math.log(e0) - math.log(level)) / (math.log(e0) - math.log(e))
            return math.exp(math.log(n0) + f * (math.log(n) - math.log(n0)))
    return math.inf


def velocity_error(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    gaussian: Callable[[Tensor, Tensor], Tensor],
    data: Tensor,
    levels: Iterable[float],
    *,
    repeats: int = 1,
    seed: int = 0,
    model_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[float, float]:
    """The warm start's relative velocity error per noise level (method.md §4.4 step 1).

    For probes ``x = x0 + sigma * eps`` (``x0`` the rows of ``data``, ``repeats`` noise draws each,
    one generator seeded with ``seed`` for all levels in the order given) it returns the mean over
    probes of ``|D(x) - D_G(x)| / |x - D(x)|``: the relative error of the PF-ODE velocity
    ``(x - D) / sigma`` when the Gaussian's denoiser ``D_G`` replaces the model's ``D`` (equal to
    ``sqrt(1 - EV)`` of the score). It needs one model call per probe and level, no sampling and no
    reference solve. Probes and ``D_G`` are float64 on the CPU; the model runs in ``model_dtype``
    on ``device``.

    Raises:
        ValueError: for no levels, a level <= 0, ``repeats < 1`` or empty ``data``.
    """
    chosen = [float(v) for v in levels]
    if not chosen or any(not (v > 0.0 and math.isfinite(v)) for v in chosen):
        raise ValueError(f"levels must be positive finite noise levels (at least one); got {chosen}.")
    if repeats < 1 or data.shape[0] == 0:
        raise ValueError(f"need at least one data row and repeats >= 1; got {data.shape[0]} rows, {repeats}.")
    x0 = data.detach().to("cpu", torch.float64).repeat(repeats, *([1] * (data.dim() - 1)))
    gen = torch.Generator().manual_seed(int(seed))
    where = torch.device(device) if device is not None else torch.device("cpu")
    out: dict[float, float] = {}
    with torch.no_grad():
        for level in chosen:
            x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            sigma = torch.full((x.shape[0],), level, dtype=torch.float64)
            d = denoiser(x.to(where, model_dtype), sigma.to(where, model_dtype)).to("cpu", torch.float64)
            d_g = gaussian(x, sigma).to("cpu", torch.float64)
            ratio = (d - d_g).flatten(1).norm(dim=1) / (x - d).flatten(1).norm(dim=1)
            out[level] = float(ratio.mean())
    return out


def safe_level(errors: dict[float, float], tau: float = 3e-3) -> float:
    """The lowest level from which on, upwards, ``errors[level] <= tau`` (method.md §4.4 step 1).

    ``errors`` as returned by :func:`velocity_error`. Returns ``inf`` when even the highest level
    exceeds ``tau`` (no level is safe: do not teleport without calibrating).
    """
    if not errors:
        raise ValueError("errors is empty; pass velocity_error(...) of at least one level.")
    safe = math.inf
    for level in sorted(errors, reverse=True):
        if not errors[level] <= tau:
            break
        safe = float(level)
    return safe


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; floats with 3 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if not math.isfinite(v):
                return "-" if math.isnan(v) else "inf"
            return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plots (pip install 'gaussport[plot]').")
        return None
    return plt


@dataclass(frozen=True)
class Series:
    """One line of a quality-vs-NFE plot."""

    label: str
    nfe: Sequence[int]
    error: Sequence[float]
    frechet: Sequence[FrechetSummary | None] = ()
    style: str = "o-"


def plot_quality(series: Sequence[Series], path: str | os.PathLike[str], *, title: str = "") -> bool:
    """Trajectory error (and Frechet distance, where measured) against NFE as a PNG.

    Returns False (and logs why) when matplotlib is missing.
    """
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import NullLocator, ScalarFormatter

    with_fd = any(any(f is not None for f in s.frechet) for s in series)
    fig, axes = plt.subplots(
        1, 2 if with_fd else 1, figsize=(12 if with_fd else 6.5, 4.5), dpi=110, squeeze=False
    )
    ax = axes[0][0]
    nfes = sorted({n for s in series for n in s.nfe})
    for s in series:
        ax.loglog(s.nfe, s.error, s.style, ms=4, label=s.label)
    ax.set_xlabel("denoiser evaluations (NFE)")
    ax.set_ylabel("trajectory error (RMS to the exact endpoint)")
    if with_fd:
        ax2 = axes[0][1]
        for s in series:
            pts = [(n, f) for n, f in zip(s.nfe, s.frechet, strict=False) if f is not None]
            if pts:
                std = [0.0 if math.isnan(f.std) else f.std for _, f in pts]
                ax2.errorbar(
                    [n for n, _ in pts],
                    [f.mean for _, f in pts],
                    yerr=std,
                    fmt=s.style,
                    ms=4,
                    capsize=2,
                    label=s.label,
                )
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("denoiser evaluations (NFE)")
        ax2.set_ylabel("Frechet distance (mean +- std over seeds)")
    for a in axes[0]:
        a.set_xticks(nfes)
        a.xaxis.set_major_formatter(ScalarFormatter())
        a.xaxis.set_minor_locator(NullLocator())
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    # Leave the top strip to the title, or tight_layout lets the axes' labels run into it.
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95) if title else (0.0, 0.0, 1.0, 1.0))
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_heatmap(
    values: Sequence[Sequence[float]],
    rows: Sequence[Any],
    columns: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    row_label: str = "sigma_skip",
    column_label: str = "NFE",
    fmt: str = "{:.3g}",
    ax: Any = None,
) -> bool:
    """A heat map (log colour scale, best cell per column in bold) as a PNG, like method.md §3.

    With ``ax`` given, draws into it and does not save.
    """
    plt = _pyplot()
    if plt is None:
        return False
    from matplotlib.colors import LogNorm

    data = np.array(values, dtype=float)
    finite = data[np.isfinite(data) & (data > 0)]
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(columns), 0.8 + 0.45 * len(rows)), dpi=110)
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    ax.imshow(np.where(np.isfinite(data), data, np.nan), cmap="viridis_r", norm=norm, aspect="auto")
    best = np.nanargmin(np.where(np.isfinite(data), data, np.inf), axis=0)
    for i in range(len(rows)):
        for j in range(len(columns)):
            v = data[i, j]
            text = fmt.format(v) if np.isfinite(v) else "-"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                fontweight="bold" if best[j] == i else "normal",
                color="white" if np.isfinite(v) and norm is not None and norm(v) > 0.6 else "black",
            )
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title, fontsize=9)
    if own:
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return True


def save_sample_panels(
    panels: Sequence[tuple[str, Tensor]],
    path: str | os.PathLike[str],
    *,
    columns: int = 8,
    title: str = "",
) -> bool:
    """Side-by-side grids of 8x8 digits (model space [-1, 1]; ink dark on white) as a PNG."""
    plt = _pyplot()
    if plt is None:
        return False
    rows = max(math.ceil(images.shape[0] / columns) for _, images in panels)
    # Panels keep the canvas' aspect (rows x columns of 9-pixel cells), plus room for two title lines.
    height = 3.2 * (rows * 9 + 1) / (columns * 9 + 1) + (0.9 if title else 0.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), height), dpi=110, squeeze=False)
    for ax, (name, images) in zip(axes[0], panels, strict=True):
        x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
        n = x.shape[0]
        # 1-pixel light-grey separators between the digits
        canvas = torch.full((math.ceil(n / columns) * 9 + 1, columns * 9 + 1), -0.7)
        for k in range(n):
            r, c = divmod(k, columns)
            canvas[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = x[k].reshape(x.shape[-2], x.shape[-1])[
                :8, :8
            ]
        ax.imshow(-canvas.numpy(), cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.3 / height) if title else (0.0, 0.0, 1.0, 1.0))
    fig.savefig(path)
    plt.close(fig)
    return True
