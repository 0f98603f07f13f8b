"""``tune``: a sampling recipe optimised on reference trajectories (method: docs/recipes.md).

Per solver and NFE budget the teleport level and the solver's grid below it, first from the Karras
family (teleport level and rho jointly), then with every level free (Nelder-Mead in log sigma),
kept only where it beats the family grid on validation seeds. The file format is
:mod:`gaussport.tuning.recipe`; this module is apart from it because tuning samples
(:mod:`gaussport.sampling`), which itself reads recipes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._warm_statistics import with_warm_start_statistics
from .probes import fingerprint_model, fingerprint_statistics
from .recipe import Recipe, RecipeEntry

__all__ = ["FAMILY_LEVELS", "FAMILY_RHOS", "METHODS", "tune"]

FAMILY_LEVELS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
FAMILY_RHOS = (1.5, 3.0, 7.0, 12.0)
METHODS = ("free", "family")
# Largest step in log sigma one free level may take (keeps the decoded grid inside float range).
_MAX_LOG_GAP = 12.0
_MIN_LOG_GAP = 1e-3


def _levels_for(solver: Any, nfe: int) -> int | None:
    """The number ``n`` of positive levels (then 0) whose grid costs exactly ``nfe`` evaluations."""
    for n in range(1, nfe + 2):
        grid = tuple(float(2.0 ** (-k)) for k in range(n)) + (0.0,)
        cost = solver.evaluations(grid)
        if cost == nfe:
            return n
        if cost > nfe:
            return None
    return None


def _decode(theta: Sequence[float], sigma_max: float) -> tuple[float, ...]:
    """The free grid of the unconstrained parameters: ``theta[0] = log sigma_skip``, then one
    ``log(log(s_i / s_{i+1}))`` per further level (so the grid is strictly decreasing for any
    ``theta``); the final 0 appended."""
    log_s = min(float(theta[0]), math.log(sigma_max))
    levels = [math.exp(log_s)]
    for t in theta[1:]:
        log_s -= math.exp(min(max(float(t), math.log(_MIN_LOG_GAP)), math.log(_MAX_LOG_GAP)))
        levels.append(math.exp(log_s))
    # Six significant digits: a readable file, and what is evaluated is exactly what is written.
    return (*(_round(v) for v in levels), 0.0)


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _encode(grid: Sequence[float]) -> list[float]:
    positive = [g for g in grid if g > 0.0]
    theta = [math.log(positive[0])]
    for a, b in zip(positive[:-1], positive[1:], strict=True):
        theta.append(math.log(math.log(a / b)))
    return theta


def _split_to_cost(grid: Sequence[float], solver: Any, nfe: int) -> tuple[float, ...] | None:
    """``grid`` with its largest gaps in log sigma halved (geometric midpoints) until it costs ``nfe``
    evaluations with ``solver``; ``None`` if no such refinement costs exactly ``nfe``.

    A grid tuned at a smaller budget, refined this way, is a start (and a fallback) at the larger
    budget that is never far from the smaller budget's error: the refined solver takes the same path
    with smaller steps.
    """
    positive = [float(g) for g in grid if g > 0.0]
    tail = [float(g) for g in grid if g <= 0.0]
    while solver.evaluations((*positive, *tail)) < nfe:
        if len(positive) < 2:
            return None
        gaps = [math.log(a / b) for a, b in zip(positive[:-1], positive[1:], strict=True)]
        i = max(range(len(gaps)), key=gaps.__getitem__)
        positive.insert(i + 1, _round(math.sqrt(positive[i] * positive[i + 1])))
        if not positive[i] > positive[i + 1] > positive[i + 2]:
            return None  # the rounding merged two levels
    refined = (*positive, *tail)
    return refined if solver.evaluations(refined) == nfe else None


def _family_grid(n: int, level: float, rho: float, sigma_min: float) -> tuple[float, ...]:
    from .. import grids

    if n == 1:
        return (level, 0.0)
    return tuple(_round(v) for v in grids.karras(n, min(sigma_min, level / 2.0), level, rho))


def tune(
    denoiser: Any,
    warm_start: Any,
    *,
    shape: Sequence[int],
    solvers: Sequence[str],
    nfes: Sequence[int],
    seeds: Sequence[int],
    validation_seeds: Sequence[int] = (),
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    method: str = "free",
    levels: Sequence[float] = FAMILY_LEVELS,
    rhos: Sequence[float] = FAMILY_RHOS,
    max_evaluations: int = 100,
    guard_margin: float = 0.1,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    reference_steps: int = 10,
    references: Any = None,
    device: Any = None,
    dtype: Any = None,
    model_dtype: Any = None,
    provenance: Mapping[str, Any] | None = None,
    disable: bool | None = None,
) -> Recipe:
    """Tune the teleport level and the solver's grid per solver and NFE on reference trajectories.

    For each solver and budget the grid has the ``n`` positive levels whose cost is the budget
    (``solver.evaluations``), then 0; its first level is the teleport level ``sigma_skip``. First
    the best Karras grid is found by a joint search over the teleport level (``levels``, and
    ``sigma_max`` = no teleport) and ``rho`` (``rhos``) -- the whole result with
    ``method="family"``. With ``method="free"`` every level is then a free parameter:
    Nelder-Mead on the unconstrained ``(log sigma_skip, log of each step in log sigma)``, which
    keeps the grid strictly decreasing, at most ``max_evaluations`` objective evaluations, started
    from the best (on the tuning seeds) of the Karras grid and every smaller budget's tuned grid
    refined to this budget (its largest log-sigma steps halved until it costs the budget; budgets
    are tuned smallest first). The objective is the trajectory error on the tuning
    ``seeds``: the RMS over seeds and coordinates of the distance between the sample (teleport
    from ``sigma_max`` to ``sigma_skip``, then the solver) and the exact ODE endpoint of the same
    initial noise. On ``validation_seeds`` (disjoint) the free grid is kept only if it beats the
    Karras grid there too, by ``guard_margin`` (a guard against fitting the tuning seeds); both
    errors are in the provenance. Finally, per solver, a budget whose held-out error (validation
    seeds, else tuning seeds) is above a smaller budget's takes the best such smaller budget's grid
    refined to its cost where that is better held out (``"chosen": "refined"``): more evaluations
    should not give a worse sample. Deterministic: fixed seeds, one generator per seed, a
    deterministic optimiser.

    Cost: the reference solves (RK4 in ``lambda``, ``4 * ceil(reference_steps * log(sigma_max /
    sigma_min))`` evaluations per seed, once; stated in the provenance with their seconds) plus
    per (solver, NFE) ``(len(levels) + 1) * len(rhos) + max_evaluations`` samples of the tuning
    seeds at that NFE, one more per smaller budget (the refined starts), and a few samples of the
    validation seeds. Method: docs/recipes.md.

    Args:
        denoiser: ``D(x, sigma)`` (VE).
        warm_start: the Gaussian to teleport with (``flow``).
        shape: the sample shape, e.g. ``(1, 8, 8)``.
        solvers: registered solver names.
        nfes: evaluation budgets; a budget the solver cannot spend exactly (Heun at even NFE) is
            skipped with a warning.
        seeds: tuning seeds (one generator per seed draws ``sigma_max * z``); keep them disjoint
            from any seeds you report (e.g. >= 10_000).
        validation_seeds: disjoint seeds for the overfitting guard (empty: no guard).
        sigma_max, sigma_min: where sampling starts; the smallest level of the Karras grids.
        method: ``"free"`` or ``"family"``.
        levels, rhos: the family search's teleport levels and Karras rho values.
        max_evaluations: the optimiser's objective evaluations per (solver, NFE).
        guard_margin: the free grid is kept only if its validation error is below ``1 -
            guard_margin`` times the Karras grid's (a gain smaller than the noise of a few
            validation seeds is not trusted).
        options: solver options per solver name (JSON values).
        reference_steps: RK4 steps per unit of ``lambda`` of the reference solves.
        references: ``seeds -> endpoints`` (float64 ``[len(seeds), *shape]``) to reuse cached
            reference endpoints of the same initial noise; default: solved here.
        device: where noise, state and model run.
        dtype: the dtype of the initial states and the solver state (default float32; the noise
            is drawn in float32 either way, as the evaluation harness draws it).
        model_dtype: the dtype the denoiser receives (default: ``dtype``).
        provenance: extra provenance (e.g. the command); merged into the recipe's.
        disable: hide the progress bar.

    Returns:
        A :class:`Recipe` with one entry per (solver, NFE) that could be tuned.

    Raises:
        ValueError: unknown solvers or method, overlapping seed sets, an empty result.
    """
    import datetime
    import logging
    import time

    import numpy as np
    import torch
    from scipy.optimize import minimize
    from tqdm.auto import tqdm

    from .. import solvers as _solvers
    from .._checks import as_int
    from ..denoiser import CountingDenoiser
    from ..reference import reference_solve
    from ..sampling import sample, solve

    logger = logging.getLogger("gaussport")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    names = [str(s) for s in solvers]
    for name in names:
        _solvers.solver_class(name)  # the usual unknown-solver error
    if not names:
        raise ValueError("solvers is empty; name at least one (e.g. ['dpmpp_2m']).")
    budgets = [as_int(n, "nfe", minimum=1) for n in nfes]
    if not budgets:
        raise ValueError("nfes is empty; give at least one budget (e.g. [4, 6]).")
    tuning = tuple(as_int(s, "seed", minimum=0) for s in seeds)
    validation = tuple(as_int(s, "validation seed", minimum=0) for s in validation_seeds)
    if not tuning or len(set(tuning)) != len(tuning):
        raise ValueError("seeds must be a non-empty list of distinct seeds (e.g. range(10_000, 10_024)).")
    if len(set(validation)) != len(validation) or set(validation) & set(tuning):
        raise ValueError("validation_seeds must be distinct and disjoint from the tuning seeds.")
    as_int(max_evaluations, "max_evaluations", minimum=0)
    if (
        isinstance(guard_margin, bool)
        or not isinstance(guard_margin, int | float)
        or not 0 <= guard_margin < 1
    ):
        raise ValueError(f"guard_margin must be a number in [0, 1), got {guard_margin!r}.")
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}.")
    options = {k: dict(v) for k, v in (options or {}).items()}
    shape = tuple(int(s) for s in shape)
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.float32
    model_dtype = model_dtype or dtype

    def noise(chosen: Sequence[int]) -> torch.Tensor:
        z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in chosen])
        return (sigma_max * z).to(device, dtype)

    # Reference endpoints: once per seed, their cost stated.
    all_seeds = tuning + validation
    t0 = time.perf_counter()
    counter = CountingDenoiser(denoiser)
    with torch.no_grad():
        if references is not None:
            exact = references(all_seeds).to("cpu", torch.float64)
            reference_cost: dict[str, Any] = {"supplied": True}
        else:
            logger.info(
                "tune: reference endpoints of %d seeds (RK4, %d steps per unit)",
                len(all_seeds),
                reference_steps,
            )
            exact = reference_solve(
                counter,
                noise(all_seeds).to(torch.float64),
                (sigma_max, sigma_min, 0.0),
                steps_per_unit=reference_steps,
                model_dtype=model_dtype,
            ).to("cpu", torch.float64)
            reference_cost = {"nfe_per_seed": counter.calls}
    reference_cost["seconds"] = round(time.perf_counter() - t0, 2)
    exact_tuning, exact_validation = exact[: len(tuning)], exact[len(tuning) :]
    x_tuning, x_validation = noise(tuning), noise(validation) if validation else None

    def error(solver: Any, grid: tuple[float, ...], x: torch.Tensor, target: torch.Tensor) -> float:
        with torch.no_grad():
            try:
                if grid[0] >= sigma_max:
                    out = _solve_plain(solve, sample, solver, denoiser, warm_start, x, grid, model_dtype)
                else:
                    out = sample(
                        denoiser,
                        x,
                        (sigma_max, *grid),
                        solver,
                        warm_start=warm_start,
                        sigma_skip=grid[0],
                        teleport="truncate",
                        model_dtype=model_dtype,
                        disable=True,
                    ).x
            except FloatingPointError:
                return math.inf
        diff = out.to("cpu", torch.float64) - target
        value = float(diff.square().mean().sqrt())
        return value if math.isfinite(value) else math.inf

    budgets = sorted(set(budgets))  # smaller budgets first: their grids start the larger ones
    cells = [(name, nfe) for name in names for nfe in budgets]
    entries: list[RecipeEntry] = []
    report: dict[str, Any] = {}
    steps_per_cell = (len(levels) + 1) * len(rhos) + (max_evaluations if method == "free" else 0)
    bar = tqdm(total=len(cells) * steps_per_cell, desc="tune", disable=disable, unit="run")
    # Per solver, the tuned cells so far, smallest budget first: (nfe, grid, tuning error, validation error).
    tuned: dict[str, list[tuple[int, tuple[float, ...], float, float | None]]] = {name: [] for name in names}
    for name, nfe in cells:
        solver = _solvers.get(name, **options.get(name, {}))
        n = _levels_for(solver, nfe)
        if n is None:
            logger.warning("tune: %s cannot spend exactly %d evaluations; skipped", name, nfe)
            bar.update(steps_per_cell)
            continue
        t_cell = time.perf_counter()
        # 1. The best Karras grid: teleport level and rho jointly.
        best_family: tuple[float, tuple[float, ...], dict[str, float]] = (math.inf, (), {})
        for level in (*levels, sigma_max):
            for rho in rhos:
                grid = _family_grid(n, float(level), float(rho), sigma_min)
                e = error(solver, grid, x_tuning, exact_tuning)
                if e < best_family[0]:
                    best_family = (e, grid, {"sigma_skip": float(level), "rho": float(rho)})
                bar.update(1)
        family_error, family_grid, family_params = best_family
        if not math.isfinite(family_error):
            logger.warning("tune: %s at NFE %d diverges on every Karras grid; skipped", name, nfe)
            bar.update(steps_per_cell - (len(levels) + 1) * len(rhos))
            continue
        chosen_error, chosen_grid, kind = family_error, family_grid, "family"
        record: dict[str, Any] = {"family": {**family_params, "error": family_error}}
        if method == "free" and max_evaluations > 0:
            # 2. Free levels: Nelder-Mead on the unconstrained parameterisation, from the best start:
            # the Karras grid or a smaller budget's tuned grid refined to this cost (at larger budgets
            # the optimiser started from the Karras grid alone can end in a worse optimum than the
            # smaller budget's grid with its largest steps halved).
            start_error, start_grid, start_from = family_error, family_grid, "family"
            for m, grid_m, _, _ in tuned[name]:
                refined = _split_to_cost(grid_m, solver, nfe)
                if refined is None:
                    continue
                e = error(solver, refined, x_tuning, exact_tuning)
                if e < start_error:
                    start_error, start_grid, start_from = e, refined, f"nfe {m}"
            theta0 = np.array(_encode(start_grid))
            simplex = np.vstack(
                [theta0] + [theta0 + 0.25 * np.eye(len(theta0))[i] for i in range(len(theta0))]
            )
            calls = [0]

            def objective(theta: np.ndarray, solver: Any = solver, calls: list[int] = calls) -> float:
                calls[0] += 1
                if calls[0] <= max_evaluations:
                    bar.update(1)
                return error(solver, _decode(theta, sigma_max), x_tuning, exact_tuning)

            result = minimize(
                objective,
                theta0,
                method="Nelder-Mead",
                options={"maxfev": max_evaluations, "initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-6},
            )
            bar.update(max(0, max_evaluations - calls[0]))
            free_grid = _decode(result.x, sigma_max)
            free_error = error(solver, free_grid, x_tuning, exact_tuning)
            if start_error < free_error:  # the start survives the round trip through theta exactly
                free_grid, free_error = start_grid, start_error
            record["free"] = {
                "start": start_from,
                "start_error": start_error,
                "error": free_error,
                "evaluations": calls[0],
            }
            if free_error < family_error:
                chosen_error, chosen_grid, kind = free_error, free_grid, "free"
        chosen_validation: float | None = None
        if validation:
            v_family = error(solver, family_grid, x_validation, exact_validation)
            record["family"]["validation_error"] = v_family
            chosen_validation = v_family
            if kind == "free":
                v_free = error(solver, chosen_grid, x_validation, exact_validation)
                record["free"]["validation_error"] = v_free
                chosen_validation = v_free
                if not v_free < (1.0 - guard_margin) * v_family:
                    logger.info(
                        "tune: %s NFE %d: free grid not %.0f%% better on validation; Karras grid kept",
                        name,
                        nfe,
                        100 * guard_margin,
                    )
                    chosen_error, chosen_grid, kind = family_error, family_grid, "family"
                    chosen_validation = v_family
        record["chosen"] = kind
        record["seconds"] = round(time.perf_counter() - t_cell, 2)
        report[f"{name}@{nfe}"] = record
        tuned[name].append((nfe, chosen_grid, chosen_error, chosen_validation))
        logger.info(
            "tune: %s NFE %d: %s grid from sigma_skip %.3g, error %.4g (Karras %.4g) [%.0f s]",
            name,
            nfe,
            kind,
            chosen_grid[0],
            chosen_error,
            family_error,
            record["seconds"],
        )
    bar.close()
    # 3. More evaluations must not give a worse sample: where a budget's held-out error (validation,
    # else tuning) is above a smaller budget's, the smaller budget's grid refined to this cost
    # replaces it if it is better there.
    for name in names:
        solver = _solvers.get(name, **options.get(name, {}))
        cells_of = tuned[name]
        for i, (nfe, _grid, tuning_error, held_out) in enumerate(cells_of):
            current = tuning_error if held_out is None else held_out
            best: tuple[float, tuple[float, ...], float, int] | None = None
            for m, grid_m, tuning_m, held_m in cells_of[:i]:
                if (tuning_m if held_m is None else held_m) <= current:
                    refined = _split_to_cost(grid_m, solver, nfe)
                    if refined is None:
                        continue
                    e_tuning = error(solver, refined, x_tuning, exact_tuning)
                    e = (
                        e_tuning
                        if held_out is None
                        else error(solver, refined, x_validation, exact_validation)
                    )
                    if e < current and (best is None or e < best[0]):
                        best = (e, refined, e_tuning, m)
            if best is not None:
                e, refined, e_tuning, m = best
                cells_of[i] = (nfe, refined, e_tuning, None if held_out is None else e)
                record = report[f"{name}@{nfe}"]
                record["refined"] = {"from_nfe": m, "error": e_tuning}
                if held_out is not None:
                    record["refined"]["validation_error"] = e
                record["chosen"] = "refined"
                logger.info(
                    "tune: %s NFE %d: NFE-%d grid refined kept (held-out error %.4g, was %.4g)",
                    name,
                    nfe,
                    m,
                    e,
                    current,
                )
        for nfe, grid, tuning_error, _ in cells_of:
            entries.append(
                RecipeEntry(
                    solver=name,
                    nfe=nfe,
                    sigma_skip=grid[0],
                    sigmas=grid,
                    options=options.get(name, {}),
                    error=tuning_error,
                )
            )
    if not entries:
        raise ValueError("no (solver, NFE) could be tuned; see the warnings above.")
    info: dict[str, Any] = {
        "model": fingerprint_model(denoiser),
        "statistics": fingerprint_statistics(warm_start),
        "shape": list(shape),
        "tuning_seeds": _seed_ranges(tuning),
        "validation_seeds": _seed_ranges(validation),
        "reference": {"solver": "RK4 in lambda", "steps_per_unit": reference_steps, **reference_cost},
        "objective": "RMS over tuning seeds and coordinates of (sample - exact endpoint)",
        "optimiser": (
            f"Karras family search (levels {list(levels)} and sigma_max, rho {list(rhos)})"
            + (
                f", then Nelder-Mead on free log-sigma levels, {max_evaluations} evaluations, from the best "
                "of the Karras grid and the smaller budgets' grids refined (largest log-sigma steps "
                f"halved) to the budget, kept if {100 * guard_margin:g}% better on the validation seeds"
                if method == "free"
                else ""
            )
            + "; then per solver, a budget whose held-out error is above a smaller budget's takes that "
            "budget's grid refined to its cost where that is better held out"
        ),
        "method": method,
        "cells": report,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gaussport": _version(),
        "torch": torch.__version__,
    }
    info.update(dict(provenance or {}))
    return Recipe(sigma_max=float(sigma_max), entries=tuple(entries), provenance=info)


def _solve_plain(
    solve: Any, sample: Any, solver: Any, denoiser: Any, warm_start: Any, x: Any, grid: Any, model_dtype: Any
) -> Any:
    """No teleport: the solver from ``sigma_max`` (the warm start's analytic statistics for
    DPM-Solver-v3, as with a teleport)."""
    return solve(
        denoiser,
        x,
        grid,
        with_warm_start_statistics(solver, warm_start, grid),
        model_dtype=model_dtype,
        disable=True,
    ).x


def _seed_ranges(seeds: Sequence[int]) -> list[Any]:
    """Seeds as compact JSON: runs of consecutive seeds as ``[first, last]``."""
    out: list[Any] = []
    for s in sorted(seeds):
        if out and isinstance(out[-1], list) and out[-1][1] == s - 1:
            out[-1][1] = s
        elif out and isinstance(out[-1], int) and out[-1] == s - 1:
            out[-1] = [out[-1], s]
        else:
            out.append(s)
    return out


def _version() -> str:
    """gaussport's version (read from the installed metadata: importing the package from here would
    make an import cycle)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gaussport")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"
