"""The solver registry: names front-ends and configs can select solvers by.

A solver module registers its class (and named presets of it) with :func:`register`; every module
in ``gaussport/solvers/`` is imported automatically, and third-party packages can add solvers
through the ``gaussport.solvers`` entry-point group, so a new solver is one file.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .. import _deprecation
from .base import Solver

__all__ = ["register", "unregister", "get", "available", "solver_class", "summary"]

_T = TypeVar("_T", bound=type)
_REGISTRY: dict[str, tuple[type[Solver], dict[str, Any]]] = {}
_SUMMARIES: dict[str, str] = {}
_PLUGINS_LOADED = False


def register(name: str, /, *, summary: str | None = None, **preset: Any) -> Callable[[_T], _T]:
    """Class decorator registering a solver under ``name`` with preset options.

    One class may be registered under several names with different presets, e.g.
    ``@register("dpmpp_2m", solver_order=2)`` and ``@register("dpmpp_3m", solver_order=3)``.
    ``summary`` is the one line that tells this name from the others (``gaussport solvers`` prints
    it; default: the first line of the class docstring).

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(cls: _T) -> _T:
        if not (isinstance(cls, type) and issubclass(cls, Solver)):
            raise TypeError(f"@register({name!r}) must decorate a Solver subclass; got {cls!r}.")
        if name in _REGISTRY:
            raise ValueError(
                f"a solver named {name!r} is already registered ({_REGISTRY[name][0].__qualname__})."
            )
        _REGISTRY[name] = (cls, dict(preset))
        if summary is not None:
            _SUMMARIES[name] = summary
        return cls

    return decorator


def unregister(name: str, /) -> None:
    """Remove the solver registered as ``name`` (e.g. a temporary solver in a test).

    Raises:
        ValueError: for an unknown name.
    """
    solver_class(name)  # raises the usual "unknown solver" error
    del _REGISTRY[name]
    _SUMMARIES.pop(name, None)


def summary(name: str, /) -> str:
    """The one line that describes the solver registered as ``name`` (its registered summary, or
    the first line of its class docstring)."""
    cls, _ = solver_class(name)
    if name in _SUMMARIES:
        return _SUMMARIES[name]
    doc = (cls.__doc__ or cls.__qualname__).strip().splitlines()
    return doc[0].strip() if doc else cls.__qualname__


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for entry in entry_points(group="gaussport.solvers"):
        entry.load()  # importing the module runs its @register decorators


def available(*, inversion: bool = False) -> tuple[str, ...]:
    """The names of all registered solvers, sorted.

    With ``inversion=True``, only those that integrate increasing grids (data to noise,
    :func:`gaussport.inversion.invert`): their class declares ``supports_inversion``.
    """
    _load_plugins()
    if inversion:
        return tuple(sorted(n for n, (cls, _) in _REGISTRY.items() if cls.supports_inversion))
    return tuple(sorted(_REGISTRY))


def solver_class(name: str) -> tuple[type[Solver], dict[str, Any]]:
    """The class registered under ``name`` and its preset options."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown solver {name!r}.{hint} Available solvers: {', '.join(available())}."
        ) from None


def get(name: str, /, **options: Any) -> Solver:
    """Build the solver registered as ``name``; ``options`` override its preset.

    A solver class may rename an option and keep the old name for one release: its class attribute
    ``renamed_options`` maps old names to new ones, and the old name warns.

    Raises:
        ValueError: for an unknown name (the message lists the available ones), or an option value
            the solver does not allow.
        TypeError: for an option the solver does not have (the message lists the ones it has), or
            an option value of the wrong type (every field is checked against its declared type
            when the solver is built: :func:`gaussport.loop.check_options`).
    """
    cls, preset = solver_class(name)
    for old, new in getattr(cls, "renamed_options", {}).items():
        if old in options:
            if new in options:
                raise TypeError(f"solver {name!r} got both {old}= and {new}=; pass only {new}=.")
            _deprecation.warn(f"the option {old}= of solver {name!r}", f"{new}=")
            options = {**{k: v for k, v in options.items() if k != old}, new: options[old]}
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(options) - fields)
    if unknown:
        accepted = ", ".join(sorted(fields)) or "none"
        raise TypeError(
            f"solver {name!r} has no option(s) {', '.join(map(repr, unknown))}; its options are: {accepted}."
        )
    try:
        return cls(**{**preset, **options})
    except (TypeError, ValueError) as exc:
        if type(exc) not in (TypeError, ValueError):
            raise
        # Name the solver as the caller did (one class serves several names).
        message = str(exc).removeprefix(f"{cls.__name__}: ")
        raise type(exc)(f"solver {name!r} ({cls.__name__}): {message}") from None
