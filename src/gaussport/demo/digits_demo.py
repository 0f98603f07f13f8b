"""``gaussport demo``: the shipped digits model sampled with and without the Gaussian warm start.

:func:`run_digits_demo` loads the shipped 8x8-digits denoiser and the Gaussian fitted to its
training split (:func:`gaussport.digits.evaluator`) and measures, with the evaluation harness, each
solver at each NFE budget on a fixed set of seeds

* without a teleport (the solver on the full Karras grid from ``sigma_max = 80``), and
* after a teleport to ``sigma_skip`` (``teleport="respace"``: the same NFE re-spaced below it;
  ``"truncate"``: the Karras grid below it),

by the **trajectory error** (RMS distance to the exact ODE endpoint of the same seed, a float64 RK4
reference solve of the same network: solver error, not model error) and, optionally, a **Frechet
distance** to the held-out digits (noisy at the demo's sample counts: see the docs).
:func:`write_digits_outputs` writes PNG sample grids, a quality-vs-NFE plot, ``results.json`` and
``results.csv``; :func:`digits_table` formats the table the command line prints.

The default teleport level ``sigma_skip = 2`` agrees with the harness smoke test and the phase-1
sweep, and with a calibration on 16 seeds apart from the demo's (1000-1015; levels 1, 1.5, 2, 3, 5,
10): the best level for DPM-Solver++(2M) was 2 at NFE 6 and 8 and 3 at NFE 10, for Heun 1 to 2.
Teleporting lower replaces more of the network's own trajectory by the Gaussian's (the warm-start
error, about 0.075 RMS at ``sigma_skip = 2``, which more solver steps do not remove); teleporting
higher leaves the solver more of the trajectory to cover with the same evaluations.

With a tuned recipe (:func:`gaussport.digits.load_digits_recipe`, the default: ``recipe="default"``)
the teleported run of every solver and budget the recipe has uses the recipe's level and grid
instead (docs/recipes.md); ``recipe=None`` (``gaussport demo --recipe none``) keeps the fixed level
for all.

:func:`gaussport.digits.train_demo_model` (``gaussport train-demo``, ``benchmarks/train_demo.py``)
retrains the digits model into a directory that the loaders and ``gaussport demo --model`` accept.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import digits
from .._files import atomic_writer
from ..evaluation import (
    SIGMA_MAX,
    SIGMA_MIN,
    TELEPORTS,
    Evaluation,
    Evaluator,
    Series,
    markdown_table,
    nfe_to_reach,
    plot_quality,
    save_sample_panels,
)
from ..solvers import get as get_solver
from ..tuning.recipe import Recipe, load_recipe
from . import _arguments

__all__ = [
    "DEFAULT_RECIPE",
    "DIGITS_DEFAULTS",
    "FRECHET_NOISE",
    "DigitsDemo",
    "check_digits_demo",
    "run_digits_demo",
    "digits_table",
    "write_digits_outputs",
]

logger = logging.getLogger("gaussport")

DIGITS_DEFAULTS: dict[str, Any] = {
    "solvers": ("dpmpp_2m",),
    "nfes": (6, 8, 10),
    "sigma_skip": 2.0,
    "teleport": "respace",
    "batch": 32,
    "seed": 0,
    "frechet_samples": 200,
    "frechet_seeds": 2,
    "reference_steps": 8,
}
"""The defaults of :func:`run_digits_demo` and ``gaussport demo`` (about 25 s on one CPU thread).

DPM-Solver++(2M) is the default solver: in the harness smoke test (16 seeds) it had the lowest
trajectory error of Heun and DPM-Solver++(2M) at every NFE in 6..10, with and without a teleport.
``reference_steps = 8`` RK4 steps per unit of ``lambda`` put the exact endpoints within 1.4e-5 RMS
of a solve with twice the steps, far below the errors measured (0.07 and up).
"""

DEFAULT_RECIPE = "default"
"""``recipe=DEFAULT_RECIPE``: the model's own tuned recipe -- the shipped one for the shipped model,
``DIR/digits_recipe.json`` for ``directory=DIR`` if there is one (else none)."""

RECIPE_MODE = "recipe"  # the ``teleport`` of a run that used a recipe entry

FRECHET_SEED_OFFSET = 10_000  # Frechet draws use their own generators, apart from the sample seeds

FRECHET_NOISE = (
    "Frechet noise at 200 samples, measured over 10 seeds on the six default runs: std 3.2 for one "
    "seed (2.4-4.5 by run), 2.3 for the mean of the default 2 seeds; the with-minus-without-teleport "
    "difference on the same seeds varies less (1.0-1.4 for the mean of 2)."
)
"""The one statement of the Frechet distance's noise (the help, the table, the plot and the README quote it).

Measured with ``run_digits_demo(frechet_seeds=10)`` (seeds 10000-10009 of 200 samples each, the
defaults otherwise): the sample std over seeds of each of the six runs (DPM-Solver++(2M) at NFE 6,
8, 10, without and with the teleport) was 2.4-4.5, pooled 3.2; the same seeds make the runs'
values move together (seed 10006 was the highest in every run), so differences between runs vary
less than the runs. Larger ``frechet_samples`` are steadier and slower.
"""


@dataclass(frozen=True)
class DigitsDemo:
    """The measurements of one :func:`run_digits_demo` run.

    Attributes:
        evaluations: one :class:`~gaussport.evaluation.Evaluation` per solver, NFE and mode
            (``"none"`` first, then the teleport), in that order.
        exact: the exact ODE endpoints of the seeds (float64, CPU).
        settings: the arguments of the run (JSON-serialisable).
        reference_seconds: wall time of the exact endpoints.
        seconds: wall time of the whole run.
        notes: one line per NFE budget that a solver could not use exactly (the NFE it ran instead)
            or that ran the same grids as a smaller budget (measured once); also logged as warnings.
    """

    evaluations: tuple[Evaluation, ...]
    exact: torch.Tensor
    settings: dict[str, Any]
    reference_seconds: float
    seconds: float
    notes: tuple[str, ...] = ()

    def budgets(self, solver: str) -> list[int]:
        """The NFE budgets measured for ``solver``, ascending (a budget that ran the same grids as a
        smaller one is measured once, under the smaller one)."""
        return sorted({e.nfe_budget for e in self.evaluations if e.solver == solver})

    def find(self, solver: str, nfe: int, teleport: str) -> Evaluation:
        """The evaluation of ``solver`` at budget ``nfe`` with ``teleport`` (``"none"``, the run's
        mode, or ``"recipe"`` where the recipe's entry ran)."""
        for e in self.evaluations:
            if e.solver == solver and e.nfe_budget == nfe and e.teleport == teleport:
                return e
        raise KeyError(f"no evaluation of {solver!r} at NFE {nfe} with teleport {teleport!r}.")

    def warm(self, solver: str, nfe: int) -> Evaluation:
        """The teleported evaluation of ``solver`` at budget ``nfe``: the recipe's entry where it has
        one, else the fixed level."""
        for e in self.evaluations:
            if e.solver == solver and e.nfe_budget == nfe and e.teleport != "none":
                return e
        raise KeyError(f"no teleported evaluation of {solver!r} at NFE {nfe}.")

    def reach(self) -> dict[str, float]:
        """Per solver: the NFE at which the teleport reaches the no-teleport error at the largest NFE.

        Log-log interpolation (:func:`~gaussport.evaluation.nfe_to_reach`); the smallest measured NFE
        when already there, ``inf`` when never.
        """
        out = {}
        for solver in self.settings["solvers"]:
            nfes = self.budgets(solver)
            target = self.find(solver, nfes[-1], "none").error
            warm = [self.warm(solver, n) for n in nfes]
            out[solver] = nfe_to_reach([e.nfe for e in warm], [e.error for e in warm], target)
        return out


def check_digits_demo(
    solvers: Sequence[str] = DIGITS_DEFAULTS["solvers"],
    nfes: Sequence[int] = DIGITS_DEFAULTS["nfes"],
    *,
    sigma_skip: float = DIGITS_DEFAULTS["sigma_skip"],
    teleport: str = DIGITS_DEFAULTS["teleport"],
    batch: int = DIGITS_DEFAULTS["batch"],
    seed: int = DIGITS_DEFAULTS["seed"],
    frechet_samples: int = DIGITS_DEFAULTS["frechet_samples"],
    frechet_seeds: int = DIGITS_DEFAULTS["frechet_seeds"],
    reference_steps: int = DIGITS_DEFAULTS["reference_steps"],
    device: torch.device | str | None = None,
    directory: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: Recipe | str | os.PathLike[str] | None = DEFAULT_RECIPE,
    names: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Check the arguments of :func:`run_digits_demo` without loading, computing or writing anything.

    ``gaussport demo`` calls it before any work: every argument, the device (one that runs here),
    the model directory (a model is there), the cache directory (writable or creatable) and every
    NFE budget (at least one step of each solver) are checked up front.

    Args:
        names: what the caller calls the arguments, for the messages (the command line passes
            ``{"batch": "--batch", ...}``); the Python names otherwise. The rest: as
            :func:`run_digits_demo`.

    Returns:
        One line per NFE budget that a solver cannot use as given (what :attr:`DigitsDemo.notes` holds).

    Raises:
        ValueError, TypeError, FileNotFoundError: as :func:`run_digits_demo`.
    """
    return _checked(**locals())[1]  # the arguments, as given


def _checked(
    solvers: Sequence[str],
    nfes: Sequence[int],
    *,
    sigma_skip: float,
    teleport: str,
    batch: int,
    seed: int,
    frechet_samples: int,
    frechet_seeds: int,
    reference_steps: int,
    device: torch.device | str | None,
    directory: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    recipe: Recipe | str | os.PathLike[str] | None = DEFAULT_RECIPE,
    names: Mapping[str, str] | None = None,
) -> tuple[list[tuple[str, int, str]], tuple[str, ...]]:
    """The planned runs and budget notes of valid arguments (:func:`check_digits_demo`)."""
    label = dict(names or {}).get  # the caller's names: flags on the command line
    for key, value in (("solvers", solvers), ("nfes", nfes)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{label(key, key)} must be a list; got {value!r} (write [{value!r}] for one).")
    if not solvers:
        raise ValueError("no solver given; pass at least one name (see `gaussport solvers`).")
    for name in solvers:
        get_solver(name)  # an unknown name fails here, before any model call
    if not nfes:
        raise ValueError("no NFE budget given; pass at least one (e.g. 6 8 10).")
    for n in nfes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"NFE budgets ({label('nfes', 'nfes')}) must be positive integers; got {n!r}.")
    if teleport not in TELEPORTS[1:]:
        raise ValueError(f"{label('teleport', 'teleport')} must be one of {TELEPORTS[1:]}; got {teleport!r}.")
    _arguments.noise_level(label("sigma_skip", "sigma_skip"), sigma_skip, SIGMA_MIN, SIGMA_MAX)
    _arguments.integer(label("batch", "batch (the number of seeds)"), batch, minimum=1)
    samples = label("frechet_samples", "frechet_samples")
    if _arguments.integer(samples, frechet_samples, minimum=0) == 1:
        raise ValueError(f"{samples} must be 0 (no Frechet distance) or at least 2; got 1.")
    with_fd = frechet_samples > 0
    _arguments.integer(label("frechet_seeds", "frechet_seeds"), frechet_seeds, minimum=1 if with_fd else 0)
    first = label("seed", "seed")
    _arguments.seeds(first, seed, batch)
    _arguments.seeds(
        f"{first} + {FRECHET_SEED_OFFSET} (the first Frechet seed)", FRECHET_SEED_OFFSET + seed, frechet_seeds
    )
    _arguments.integer(label("reference_steps", "reference_steps"), reference_steps, minimum=1)
    _arguments.device(device, label("device", "device"))
    if directory is not None:
        _arguments.model_directory(label("directory", "directory"), directory, frechet=with_fd)
    if cache_dir is not None:
        _arguments.writable_directory(label("cache_dir", "cache_dir"), cache_dir)
    resolve_recipe(recipe, directory, name=label("recipe", "recipe"))
    # Every budget is checked (and adjusted) on the grids alone, before a model is loaded.
    planner = Evaluator(_no_model, None, shape=(1,), seeds=(0,), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    jobs, notes = _plan(planner, tuple(solvers), tuple(sorted(set(nfes))), teleport, sigma_skip)
    return jobs, tuple(notes)


def resolve_recipe(
    recipe: Recipe | str | os.PathLike[str] | None,
    directory: str | os.PathLike[str] | None = None,
    *,
    name: str = "recipe",
) -> Recipe | None:
    """The recipe the demo uses: ``None`` for none; :data:`DEFAULT_RECIPE` for the model's own (the
    shipped recipe for the shipped model, ``DIR/digits_recipe.json`` if ``directory`` has one);
    otherwise a :class:`~gaussport.tuning.Recipe` or the path of one (read and validated here).

    Raises:
        ValueError: the file is not a valid recipe, or it starts from another ``sigma_max``.
        FileNotFoundError: no such recipe file.
        TypeError: neither a recipe, a path nor ``None``.
    """
    if recipe is None:
        return None
    if isinstance(recipe, str) and recipe == DEFAULT_RECIPE:
        try:
            loaded = digits.load_digits_recipe(directory=directory)
        except FileNotFoundError:  # a model directory without a recipe: the fixed level
            return None
    else:
        loaded = load_recipe(recipe)
    if loaded.sigma_max != SIGMA_MAX:
        raise ValueError(
            f"{name}: the recipe starts sampling at sigma_max = {loaded.sigma_max:g}, the demo at "
            f"{SIGMA_MAX:g}; give a recipe tuned from {SIGMA_MAX:g} (gaussport tune), or none."
        )
    return loaded


def _no_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the budget planner never calls its model")  # pragma: no cover


def run_digits_demo(
    solvers: Sequence[str] = DIGITS_DEFAULTS["solvers"],
    nfes: Sequence[int] = DIGITS_DEFAULTS["nfes"],
    *,
    sigma_skip: float = DIGITS_DEFAULTS["sigma_skip"],
    teleport: str = DIGITS_DEFAULTS["teleport"],
    batch: int = DIGITS_DEFAULTS["batch"],
    seed: int = DIGITS_DEFAULTS["seed"],
    frechet_samples: int = DIGITS_DEFAULTS["frechet_samples"],
    frechet_seeds: int = DIGITS_DEFAULTS["frechet_seeds"],
    reference_steps: int = DIGITS_DEFAULTS["reference_steps"],
    device: torch.device | str | None = None,
    directory: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: Recipe | str | os.PathLike[str] | None = DEFAULT_RECIPE,
    disable: bool | None = None,
) -> DigitsDemo:
    """Sample the digits model with each solver at each NFE, with and without a teleport.

    Args:
        solvers: registered solver names.
        nfes: the NFE budgets (:meth:`~gaussport.evaluation.Evaluator.budget`: the NFE actually used is
            reported; Heun, for instance, uses ``2n - 1 <= NFE``).
        sigma_skip: the teleport level.
        teleport: ``"respace"`` or ``"truncate"`` (:meth:`~gaussport.evaluation.Evaluator.evaluate`).
        batch: the number of seeds (samples) of the trajectory error and the sample grids.
        seed: the first seed; the seeds are ``seed, seed + 1, ..., seed + batch - 1``.
        frechet_samples: samples per Frechet seed; 0 disables the Frechet distance.
        frechet_seeds: the number of Frechet seeds (their spread is the reported noise).
        reference_steps: RK4 steps per unit of ``lambda`` for the exact endpoints.
        device: where the model runs.
        directory: a model trained with :func:`gaussport.digits.train_demo_model` (default: the
            shipped one).
        cache_dir: keep the exact endpoints on disk between runs.
        recipe: a tuned recipe (a :class:`~gaussport.tuning.Recipe` or its file): the teleported
            run of each solver and budget it has uses its level and grid (teleport ``"recipe"``);
            the others, the fixed ``sigma_skip``. Default: the model's own (:func:`resolve_recipe`);
            ``None``: the fixed level everywhere.
        disable: hides the progress bars (``None``: only on a terminal, as tqdm does).

    Returns:
        A :class:`DigitsDemo`.

    Raises:
        ValueError: for an unknown solver or teleport mode, an empty or non-positive NFE list, a
            budget too small for one step, a non-positive batch or count, a negative seed, a
            ``sigma_skip`` outside (0.002, 80], a device that cannot run here, or a cache directory
            that cannot be written; all before anything is loaded (:func:`check_digits_demo`).
        TypeError: for a number that is not an integer, or a name where a list is expected.
        FileNotFoundError: for a ``directory`` that holds no model (``gaussport train-demo --out
            DIR`` writes one).
    """
    jobs, notes = _checked(
        solvers,
        nfes,
        sigma_skip=sigma_skip,
        teleport=teleport,
        batch=batch,
        seed=seed,
        frechet_samples=frechet_samples,
        frechet_seeds=frechet_seeds,
        reference_steps=reference_steps,
        device=device,
        directory=directory,
        cache_dir=cache_dir,
        recipe=recipe,
    )
    tuned = resolve_recipe(recipe, directory)
    solvers, nfes = tuple(solvers), tuple(sorted(set(nfes)))
    with_fd = frechet_samples > 0
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if with_fd:
        first = FRECHET_SEED_OFFSET + seed
        extra = {"frechet_seeds": range(first, first + frechet_seeds), "frechet_samples": frechet_samples}
    else:
        extra = {"frechet_metric": None}
    ev = digits.evaluator(
        directory=directory,
        device=device,
        seeds=range(seed, seed + batch),
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        reference_steps=reference_steps,
        cache_dir=cache_dir,
        disable=disable,
        **extra,
    )
    for note in notes:
        logger.warning("%s", note)
    if tuned is not None:
        _check_fingerprint(tuned, ev.denoiser)
    exact = ev.reference()
    ev.disable = True  # one bar over the configurations below, not one per solve
    evaluations = []
    for solver, nfe, mode in tqdm(jobs, disable=disable, desc="gaussport demo", unit="run"):
        skip = None if mode == "none" else sigma_skip
        if mode != "none" and tuned is not None and tuned.has(solver, nfe):
            e = _evaluate_entry(ev, tuned, solver, nfe, frechet=with_fd)
        else:
            e = ev.evaluate(solver, nfe, teleport=mode, sigma_skip=skip, frechet=with_fd)
        logger.info(
            "%s NFE %d (%d used) %s: trajectory error %.4g%s",
            solver,
            nfe,
            e.nfe,
            "no teleport" if mode == "none" else f"teleport to {e.sigma_skip:.3g} ({e.teleport})",
            e.error,
            "" if e.frechet is None else f", Frechet {e.frechet.mean:.3g}",
        )
        evaluations.append(e)
    settings = {
        "target": "digits",
        "model": "shipped" if directory is None else os.fspath(directory),
        "solvers": list(solvers),
        "nfes": list(nfes),
        "sigma_skip": float(sigma_skip),
        "teleport": teleport,
        "seeds": [seed, seed + batch - 1],
        "frechet_samples": frechet_samples,
        "frechet_seeds": list(ev.frechet_seeds),
        "reference_steps": reference_steps,
        "grid": f"Karras rho=7, sigma {SIGMA_MAX:g} -> {SIGMA_MIN:g}, then 0",
        "recipe": None if tuned is None else _recipe_label(recipe, directory),
        "recipe_cells": []
        if tuned is None
        else [[e.solver, e.nfe_budget] for e in evaluations if e.teleport == RECIPE_MODE],
        "device": str(ev.device),
    }
    seconds = time.perf_counter() - start
    return DigitsDemo(tuple(evaluations), exact, settings, ev.reference_seconds, seconds, tuple(notes))


def _plan(
    ev: Evaluator, solvers: Sequence[str], nfes: Sequence[int], teleport: str, sigma_skip: float
) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The runs ``(solver, budget, mode)`` to make, and a note per budget that is not used as given.

    A budget a solver cannot spend exactly (Heun: ``2n - 1`` evaluations for ``n`` steps) runs the
    NFE of the largest grid within it, and says so; a budget that runs the same grids as a smaller
    one is measured once. A budget too small for one step is an error.
    """
    jobs: list[tuple[str, int, str]] = []
    notes: list[str] = []
    modes = ("none", teleport)
    for solver in solvers:
        seen: dict[tuple[int, ...], int] = {}
        for n in nfes:
            used = []
            for mode in modes:
                skip = None if mode == "none" else sigma_skip
                one_step = ev.budget(solver, teleport=mode, sigma_skip=skip, steps=1).nfe
                if n < one_step:
                    where = "" if mode == "none" else f" after a teleport to {sigma_skip:g}"
                    raise ValueError(
                        f"an NFE budget of {n} is too small for one step of {solver!r}{where}, which "
                        f"costs {one_step} evaluations; give budgets of at least {one_step}."
                    )
                used.append(ev.budget(solver, n, mode, skip).nfe)
            key = tuple(used)
            ran = used[0] if len(set(used)) == 1 else " / ".join(map(str, used))
            if key in seen:
                notes.append(
                    f"{solver}: NFE budget {n} runs NFE {ran}, the same grids as budget {seen[key]}; "
                    "measured once."
                )
                continue
            seen[key] = n
            if any(u != n for u in used):
                notes.append(
                    f"{solver}: NFE budget {n} runs NFE {ran}, the largest grid of {solver} within it "
                    "(rows and files are named by the NFE used)."
                )
            jobs += [(solver, n, mode) for mode in modes]
    return jobs, notes


def _recipe_label(recipe: Any, directory: Any) -> str:
    if isinstance(recipe, Recipe):
        return "given"
    if isinstance(recipe, str) and recipe == DEFAULT_RECIPE:
        return "shipped" if directory is None else os.fspath(Path(directory) / digits.files.RECIPE_FILE)
    return os.fspath(recipe)


def _check_fingerprint(recipe: Recipe, denoiser: Any) -> None:
    """Warn when the recipe was tuned for another model (its grids then need not be good here)."""
    from ..tuning.probes import fingerprint_model

    tuned_for = recipe.provenance.get("model")
    if isinstance(tuned_for, str) and tuned_for != fingerprint_model(denoiser):
        logger.warning(
            "the recipe was tuned for another model (fingerprint %s...); its levels and grids may not suit "
            "this one: tune one with `gaussport tune --model DIR`",
            tuned_for[:12],
        )


def _evaluate_entry(ev: Evaluator, recipe: Recipe, solver: str, nfe: int, *, frechet: bool) -> Evaluation:
    """The recipe's entry for ``solver`` at ``nfe`` measured like the harness's runs
    (:meth:`~gaussport.evaluation.Evaluator.evaluate_recipe`)."""
    e = ev.evaluate_recipe(recipe, solver, nfe, frechet=frechet)
    if e.nfe != nfe:  # pragma: no cover - Recipe.load checked the cost
        raise RuntimeError(f"{solver}: the recipe's grid made {e.nfe} evaluations, not {nfe}.")
    assert e.teleport == RECIPE_MODE
    return e


def _mode_label(teleport: str, sigma_skip: float) -> str:
    return f"teleport to {sigma_skip:g} ({teleport})"


def _warm_label(e: Evaluation, settings: Mapping[str, Any]) -> str:
    if e.teleport == RECIPE_MODE:
        return f"recipe {e.sigma_skip:.3g}" if e.sigma_skip < SIGMA_MAX else "recipe (none)"
    return f"{settings['sigma_skip']:g} ({settings['teleport']})"


def digits_table(result: DigitsDemo) -> str:
    """The demo's results as a markdown table, with a line per solver on the NFE the teleport saves."""
    s = result.settings
    with_fd = s["frechet_samples"] > 0
    tuned = bool(s.get("recipe_cells"))
    # With recipe cells the teleport differs by row: a column says which; else the fixed level.
    warm_name = "teleport" if tuned else f"teleport to {s['sigma_skip']:g}"
    header = ["solver", "NFE", "error, no teleport"]
    header += ["Frechet, no teleport"] if with_fd else []
    header += ["teleport"] if tuned else []
    header += [f"error, {warm_name}"]
    header += [f"Frechet, {warm_name}"] if with_fd else []
    header += ["error ratio"]

    def fd(e: Evaluation) -> str:
        # The mean only: a std over the run's few seeds is itself too noisy to print (FRECHET_NOISE).
        return "-" if e.frechet is None else f"{e.frechet.mean:.3g}"

    rows = []
    for solver in s["solvers"]:
        for n in result.budgets(solver):
            plain, warm = result.find(solver, n, "none"), result.warm(solver, n)
            nfe = f"{plain.nfe}" if plain.nfe == warm.nfe else f"{plain.nfe} / {warm.nfe}"
            row: list[Any] = [solver, nfe, plain.error]
            row += [fd(plain)] if with_fd else []
            if tuned:
                row += [_warm_label(warm, s)]
            row += [warm.error]
            row += [fd(warm)] if with_fd else []
            row += [plain.error / warm.error]
            rows.append(row)
    lines = [markdown_table(header, rows), "", *result.notes]
    for solver, nfe in result.reach().items():
        budgets = result.budgets(solver)
        level = result.find(solver, budgets[-1], "none")
        smallest = result.warm(solver, budgets[0]).nfe
        if len(budgets) == 1:
            lines.append(
                f"{solver}: one NFE measured ({level.nfe}); give several budgets to see the NFE the "
                "teleport saves."
            )
            continue
        where = "no NFE measured (not reached)" if math.isinf(nfe) else f"NFE {nfe:.1f}"
        if nfe == smallest:
            where = f"NFE <= {smallest} (the smallest budget measured)"
        lines.append(
            f"{solver}: the teleport reaches the no-teleport error at NFE {level.nfe} ({level.error:.3g}) "
            f"at {where}."
        )
    lines.append(
        f"error: RMS over {s['seeds'][1] - s['seeds'][0] + 1} seeds and pixels of the distance to the exact "
        f"ODE endpoint of the same seed (RK4, {s['reference_steps']} steps per unit of lambda)."
    )
    if tuned:
        lines.append(
            f"teleport: 'recipe L' = the tuned recipe's level L and grid ({s['recipe']}; docs/recipes.md), "
            f"else the fixed level {s['sigma_skip']:g} ({s['teleport']}); `--recipe none` uses the fixed "
            "level everywhere."
        )
    if with_fd:
        lines.append(
            f"Frechet: classifier-feature Frechet distance to the held-out digits, mean over "
            f"{len(s['frechet_seeds'])} seeds x {s['frechet_samples']} samples. {FRECHET_NOISE}"
        )
    return "\n".join(lines)


def write_digits_outputs(
    result: DigitsDemo, out: str | os.PathLike[str], *, plots: bool = True
) -> list[Path]:
    """Write the demo's files into ``out`` and return their paths.

    ``results.json`` (settings, the budget notes, one record per evaluation, the NFE the teleport
    saves) and ``results.csv`` always; with ``plots`` (and matplotlib installed) a sample grid per
    NFE budget (the exact endpoints, then per solver no teleport and teleport, same seeds side by
    side) and ``quality_vs_nfe.png``. A grid is named by the NFE its runs used,
    ``samples_nfe<N>.png`` (Heun at a budget of 6 uses 5: ``samples_nfe5.png``), or
    ``samples_budget<B>.png`` where the solvers used different NFEs within the budget.

    Every file is written whole or not at all (through ``gaussport._files.atomic_writer``: a failed
    write leaves an existing file as it was, docs/conventions.md#files).

    Raises:
        ValueError: ``out`` is a file, lies under one, or is not writable (checked before writing).
    """
    out_dir = _arguments.writable_directory("out", out)
    s = result.settings
    summaries = [e.summary() for e in result.evaluations]
    record = {
        "settings": s,
        "reach": {k: (None if math.isinf(v) else v) for k, v in result.reach().items()},
        "reference_seconds": result.reference_seconds,
        "seconds": result.seconds,
        "notes": list(result.notes),
        "evaluations": summaries,
    }
    # Both tables are made before either file is opened: a failure leaves both as they were.
    results_json = json.dumps(record, indent=2) + "\n"
    columns = ["solver", "teleport", "sigma_skip", "nfe_budget", "nfe", "trajectory_rms", "trajectory_mean"]
    columns += ["trajectory_max", "frechet_mean", "frechet_std", "seconds"]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summaries)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.json", results_json), ("results.csv", table.getvalue())):
        with atomic_writer(out_dir / name, "w", newline="") as f:
            f.write(text)
        written.append(out_dir / name)
    if not plots:
        return written
    mode = _mode_label(s["teleport"], s["sigma_skip"])
    for n in s["nfes"]:
        runs = [
            e
            for solver in s["solvers"]
            if n in result.budgets(solver)
            for e in (result.find(solver, n, "none"), result.warm(solver, n))
        ]
        if not runs:  # every solver ran this budget's grids under a smaller budget
            continue
        panels = [("exact ODE endpoints", result.exact)]
        for e in runs:
            what = "no teleport" if e.teleport == "none" else mode
            if e.teleport == RECIPE_MODE:
                what = _warm_label(e, s)
            panels.append((f"{e.solver}, {what}\nNFE {e.nfe}, error {e.error:.3g}", e.samples))
        # Named by the NFE the runs used; by the budget only where the solvers used different NFEs.
        used = sorted({e.nfe for e in runs})
        name = f"samples_nfe{used[0]}.png" if len(used) == 1 else f"samples_budget{n}.png"
        what = f"NFE {used[0]}" if used == [n] else f"NFE budget {n} (NFE used: {', '.join(map(str, used))})"
        title = f"8x8 digits, seeds {s['seeds'][0]}..{s['seeds'][1]}, {what}"
        if save_sample_panels(panels, out_dir / name, title=title):
            written.append(out_dir / name)
    series = []
    for solver in s["solvers"]:
        for t, style in (("none", "o-"), (s["teleport"], "s--")):
            if t == "none":
                es = [result.find(solver, n, t) for n in result.budgets(solver)]
            else:
                es = [result.warm(solver, n) for n in result.budgets(solver)]
            label = f"{solver}, no teleport" if t == "none" else f"{solver}, {mode}"
            if t != "none" and any(e.teleport == RECIPE_MODE for e in es):
                label = f"{solver}, tuned recipe" + (
                    "" if all(e.teleport == RECIPE_MODE for e in es) else f" / {mode}"
                )
            # Means without error bars, as in the table: the noise is the measured FRECHET_NOISE.
            fds = [None if e.frechet is None else replace(e.frechet, std=math.nan) for e in es]
            series.append(Series(label, [e.nfe for e in es], [e.error for e in es], fds, style))
    path = out_dir / "quality_vs_nfe.png"
    title = "gaussport demo: the shipped 8x8-digits model"
    if s["frechet_samples"] > 0:
        noise = FRECHET_NOISE.split(": ", 1)[1].split(";")[0]
        size = f"{len(s['frechet_seeds'])} x {s['frechet_samples']}"
        title += f"\nFrechet: mean over {size} samples; noise {noise}"
    if plot_quality(series, path, title=title):
        written.append(path)
    return written
