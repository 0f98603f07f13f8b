"""Tuned sampling recipes: per solver and NFE budget, the teleport level and the solver's grid.

A :class:`Recipe` holds, for each (solver, NFE) it was tuned for, a :class:`RecipeEntry`: the level
``sigma_skip`` the analytic warm start teleports to and the grid the solver integrates from there
(strictly decreasing, starting at ``sigma_skip``, ending at 0). It is a small JSON file with its
provenance (model and statistics fingerprints, the tuning seeds, the reference solver and its cost,
the optimiser, date, gaussport version, command). ``gaussport.sample(..., recipe=R)`` uses it.
docs/recipes.md derives the method; :func:`gaussport.tuning.tune` makes one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._files import atomic_writer, finite_json

__all__ = [
    "RECIPE_FORMAT",
    "RECIPE_VERSION",
    "Recipe",
    "RecipeEntry",
    "load_recipe",
]

RECIPE_FORMAT = "gaussport.recipe"
RECIPE_VERSION = 1


def _frozen(value: Any) -> Any:
    """A read-only deep copy of JSON-like ``value`` (dicts become mapping proxies, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """``value`` as plain JSON types (the inverse of :func:`_frozen`)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _problem_in_json(value: Any, where: str) -> str | None:
    """Why ``value`` is not plain, finite JSON (``None`` if it is)."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, not a finite number"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where} has the key {k!r}, not a string"
            problem = _problem_in_json(v, f"{where}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            problem = _problem_in_json(v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__name__}, not a JSON value (number, string, bool, list, dict)"


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class RecipeEntry:
    """How to sample with one solver at one NFE budget.

    Attributes:
        solver: a registered solver name (:func:`gaussport.solvers.available`).
        nfe: the model evaluations the entry costs (``solver.evaluations(sigmas)``).
        sigma_skip: the teleport level (``== sigma_max`` of the recipe: no teleport).
        sigmas: the solver's grid, strictly decreasing, starting at ``sigma_skip`` and ending at 0
            (or at a positive ``sigma_min``).
        options: solver options (JSON values), passed to :func:`gaussport.solvers.get`.
        error: the trajectory error on the tuning seeds (RMS distance to the reference endpoint),
            or ``None``.

    Raises:
        ValueError: an unknown solver, a grid that is not strictly decreasing from ``sigma_skip``,
            non-finite numbers, or an ``nfe`` that is not what the grid costs with that solver.
        TypeError: options that are not JSON values, or a solver option of the wrong type.
    """

    solver: str
    nfe: int
    sigma_skip: float
    sigmas: tuple[float, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    error: float | None = None

    def __post_init__(self) -> None:
        problem = _entry_problem(self)
        if problem is not None:
            raise ValueError(f"invalid recipe entry: {problem}.")
        object.__setattr__(self, "nfe", int(self.nfe))
        object.__setattr__(self, "sigma_skip", float(self.sigma_skip))
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        object.__setattr__(self, "options", _frozen(dict(self.options)))
        if self.error is not None:
            object.__setattr__(self, "error", float(self.error))

    def grid_from(self, sigma_max: float) -> tuple[float, ...]:
        """The caller's grid for :func:`gaussport.sample` from ``sigma_max``: ``(sigma_max, *sigmas)``
        with ``sigma_skip=self.sigma_skip, teleport="truncate"``; ``sigmas`` itself when the entry does
        not teleport (``sigma_skip == sigma_max``)."""
        return self.sigmas if self.sigma_skip >= sigma_max else (float(sigma_max), *self.sigmas)

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values (what :meth:`Recipe.save` writes)."""
        out: dict[str, Any] = {
            "solver": self.solver,
            "nfe": self.nfe,
            "sigma_skip": self.sigma_skip,
            "sigmas": list(self.sigmas),
        }
        if self.options:
            out["options"] = _plain(self.options)
        if self.error is not None:
            out["error"] = self.error
        return out


def _entry_problem(entry: RecipeEntry) -> str | None:
    """What is wrong with ``entry`` (``None`` if nothing); the messages name the field and the fix."""
    from .. import solvers  # a registry lookup; imported here to keep the module import light

    name = entry.solver
    if not isinstance(name, str):
        return f"'solver' must be a solver name (a string), got {name!r}"
    if name not in solvers.available():
        return f"unknown solver {name!r}; registered solvers: {', '.join(solvers.available())}"
    if isinstance(entry.nfe, bool) or not isinstance(entry.nfe, int) or entry.nfe < 1:
        return f"{name}: 'nfe' must be a positive integer, got {entry.nfe!r}"
    try:
        skip = _real(entry.sigma_skip, f"{name} at NFE {entry.nfe}: 'sigma_skip'")
        if isinstance(entry.sigmas, str | bytes | Mapping) or not isinstance(entry.sigmas, Sequence):
            raise ValueError(f"{name} at NFE {entry.nfe}: 'sigmas' must be a list of numbers")
        grid = [_real(s, f"{name} at NFE {entry.nfe}: sigmas[{i}]") for i, s in enumerate(entry.sigmas)]
        if entry.error is not None:
            _real(entry.error, f"{name} at NFE {entry.nfe}: 'error'")
    except ValueError as exc:
        return str(exc)
    where = f"{name} at NFE {entry.nfe}"
    if skip <= 0.0:
        return f"{where}: 'sigma_skip' must be positive, got {skip!r}"
    if len(grid) < 2:
        return f"{where}: 'sigmas' needs at least two levels (sigma_skip and the end), got {grid!r}"
    if grid[0] != skip:
        return f"{where}: 'sigmas' must start at sigma_skip = {skip!r}, but starts at {grid[0]!r}"
    for i in range(len(grid) - 1):
        if not grid[i + 1] < grid[i]:
            return (
                f"{where}: 'sigmas' must be strictly decreasing, but sigmas[{i + 1}] = {grid[i + 1]!r} "
                f">= sigmas[{i}] = {grid[i]!r}"
            )
    if grid[-1] < 0.0:
        return f"{where}: 'sigmas' must end at 0 or a positive level, got {grid[-1]!r}"
    if not isinstance(entry.options, Mapping):
        return f"{where}: 'options' must be a mapping of solver options, got {type(entry.options).__name__}"
    problem = _problem_in_json(entry.options, f"{where}: options")
    if problem:
        return problem
    try:
        solver = solvers.get(name, **dict(entry.options))
    except (TypeError, ValueError) as exc:
        return f"{where}: its options do not build the solver ({exc})"
    cost = solver.evaluations(tuple(grid))
    if cost != entry.nfe:
        return (
            f"{where}: the grid of {len(grid)} levels costs {cost} evaluations with {name}, "
            f"not nfe = {entry.nfe}"
        )
    return None


@dataclass(frozen=True)
class Recipe:
    """Tuned (teleport level, grid) per solver and NFE for one model and its statistics.

    Attributes:
        sigma_max: the level sampling starts from (the teleport goes from there to ``sigma_skip``).
        entries: one :class:`RecipeEntry` per (solver, nfe), no duplicates.
        provenance: JSON values: fingerprints of model and statistics, tuning seeds, reference solver
            and cost, optimiser, date, gaussport version, command.

    Raises:
        ValueError: duplicate (solver, nfe), an entry whose ``sigma_skip`` is above ``sigma_max``,
            a non-finite ``sigma_max``, or provenance that is not JSON.
    """

    sigma_max: float
    entries: tuple[RecipeEntry, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sigma_max = _real(self.sigma_max, "recipe: 'sigma_max'")
        if sigma_max <= 0.0:
            raise ValueError(f"recipe: 'sigma_max' must be positive, got {self.sigma_max!r}.")
        entries = tuple(self.entries)
        seen: set[tuple[str, int]] = set()
        for e in entries:
            if not isinstance(e, RecipeEntry):
                raise TypeError(f"recipe entries must be RecipeEntry objects, got {type(e).__name__}.")
            key = (e.solver, e.nfe)
            if key in seen:
                raise ValueError(f"recipe: two entries for {e.solver} at NFE {e.nfe}; keep one.")
            seen.add(key)
            if e.sigma_skip > sigma_max:
                raise ValueError(
                    f"recipe: {e.solver} at NFE {e.nfe} teleports to sigma_skip = {e.sigma_skip!r}, "
                    f"above sigma_max = {sigma_max!r}."
                )
        if not isinstance(self.provenance, Mapping):
            raise TypeError(f"recipe: 'provenance' must be a mapping, got {type(self.provenance).__name__}.")
        problem = _problem_in_json(self.provenance, "recipe: provenance")
        if problem:
            raise ValueError(f"{problem}.")
        object.__setattr__(self, "sigma_max", sigma_max)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "provenance", _frozen(dict(self.provenance)))

    @property
    def cells(self) -> tuple[tuple[str, int], ...]:
        """The (solver, nfe) pairs the recipe has, in its order."""
        return tuple((e.solver, e.nfe) for e in self.entries)

    def has(self, solver: str, nfe: int) -> bool:
        """Whether the recipe has an entry for ``solver`` at ``nfe`` evaluations."""
        return (solver, nfe) in self.cells

    def entry(self, solver: str, nfe: int) -> RecipeEntry:
        """The entry for ``solver`` at exactly ``nfe`` evaluations.

        Raises:
            ValueError: there is none; the message lists the NFEs the recipe has for that solver,
                or the solvers it has.
        """
        for e in self.entries:
            if e.solver == solver and e.nfe == nfe:
                return e
        have = sorted(e.nfe for e in self.entries if e.solver == solver)
        if have:
            raise ValueError(
                f"the recipe has no entry for {solver} at NFE {nfe}; it has {solver} at NFE "
                f"{', '.join(map(str, have))}. Use one of those budgets, or tune this one (gaussport tune)."
            )
        names = sorted({e.solver for e in self.entries})
        raise ValueError(
            f"the recipe has no entry for the solver {solver!r}; it has {', '.join(names) or 'no entries'}. "
            "Use one of those, or tune this solver (gaussport tune --solver ...)."
        )

    def to_json(self) -> dict[str, Any]:
        """The recipe as plain JSON values (what :meth:`save` writes)."""
        return {
            "gaussport_format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "sigma_max": self.sigma_max,
            "provenance": _plain(self.provenance),
            "entries": [e.to_json() for e in self.entries],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recipe as indented JSON through :func:`gaussport._files.atomic_writer`.

        Raises:
            FileNotFoundError: the directory of ``path`` does not exist.
        """
        text = _json_text(self.to_json())
        with atomic_writer(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    @classmethod
    def from_json(cls, data: Any, *, source: str = "recipe") -> Recipe:
        """A recipe from parsed JSON (``source`` names it in errors).

        Raises:
            ValueError: a missing or malformed field, naming ``source`` and the field.
        """

        def fail(problem: str) -> ValueError:
            return ValueError(f"{source} is not a valid gaussport recipe: {problem}.")

        if not isinstance(data, dict):
            raise fail(f"the top level is a {type(data).__name__}, not a JSON object")
        if data.get("gaussport_format") != RECIPE_FORMAT:
            raise fail(f"'gaussport_format' must be {RECIPE_FORMAT!r}, got {data.get('gaussport_format')!r}")
        if data.get("version") != RECIPE_VERSION:
            raise fail(
                f"'version' {data.get('version')!r} is not {RECIPE_VERSION} (written by another gaussport? "
                "re-run gaussport tune)"
            )
        unknown = set(data) - {"gaussport_format", "version", "sigma_max", "provenance", "entries"}
        if unknown:
            raise fail(f"unknown fields {sorted(unknown)}")
        if "sigma_max" not in data:
            raise fail("'sigma_max' is missing")
        entries = data.get("entries")
        if not isinstance(entries, list) or not entries:
            raise fail("'entries' must be a non-empty list")
        parsed = []
        for i, raw in enumerate(entries):
            if not isinstance(raw, dict):
                raise fail(f"entries[{i}] is a {type(raw).__name__}, not an object")
            missing = {"solver", "nfe", "sigma_skip", "sigmas"} - set(raw)
            if missing:
                raise fail(f"entries[{i}] lacks {sorted(missing)}")
            extra = set(raw) - {"solver", "nfe", "sigma_skip", "sigmas", "options", "error"}
            if extra:
                raise fail(f"entries[{i}] has unknown fields {sorted(extra)}")
            try:
                parsed.append(
                    RecipeEntry(
                        solver=raw["solver"],
                        nfe=raw["nfe"],
                        sigma_skip=raw["sigma_skip"],
                        sigmas=raw["sigmas"],
                        options=raw.get("options", {}),
                        error=raw.get("error"),
                    )
                )
            except (TypeError, ValueError) as exc:
                raise fail(f"entries[{i}]: {exc}".rstrip(".")) from None
        provenance = data.get("provenance", {})
        try:
            return cls(sigma_max=data["sigma_max"], entries=tuple(parsed), provenance=provenance)
        except (TypeError, ValueError) as exc:
            raise fail(str(exc).rstrip(".")) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read and validate a recipe file (JSON; nothing is unpickled or executed).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not JSON, or not a valid recipe; the message names the file and the problem.
        """
        name = os.fspath(path)
        p = Path(name)
        if p.is_dir():
            raise ValueError(f"{name!r} is a directory; give the path of a recipe .json file.")
        if not p.is_file():
            raise FileNotFoundError(f"no recipe file {name!r}; make one with gaussport tune --out {name}.")
        try:
            text = p.read_text(encoding="utf-8")
            data = finite_json(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{name!r} is not a gaussport recipe (not JSON text: {exc}).") from None
        except ValueError as exc:  # a non-finite constant
            raise ValueError(f"{name!r} is not a valid gaussport recipe: {exc}.") from None
        return cls.from_json(data, source=repr(name))


def load_recipe(recipe: Recipe | str | os.PathLike[str]) -> Recipe:
    """``recipe`` itself, or the recipe read from that path (:meth:`Recipe.load`).

    Raises:
        TypeError: neither a :class:`Recipe` nor a path.
        FileNotFoundError, ValueError: from :meth:`Recipe.load`.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | os.PathLike):
        return Recipe.load(recipe)
    raise TypeError(
        f"recipe must be a Recipe or the path of a recipe .json file, got {type(recipe).__name__}."
    )


# ---------------------------------------------------------------------------------------------- tuning


#: Teleport levels and Karras rho values of the family search (the fallback and the optimiser's start).
def _json_text(value: Any, indent: str = "") -> str:
    """Indented JSON with lists of numbers (grids, seeds) on one line: small and readable."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_json_text(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value) or all(
            isinstance(v, list) and all(not isinstance(w, dict | list) for w in v) for v in value
        ):
            return json.dumps(value, allow_nan=False)
        items = [f"{inner}{_json_text(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, allow_nan=False)
