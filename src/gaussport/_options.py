"""The option check of every solver: each dataclass field against its declared type, in one place.

:class:`gaussport.loop.Solver` runs :func:`check_options` when any solver is built, so a new solver
file is covered without code of its own (docs/conventions.md#bad-input).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import sys
import types
import typing
import weakref
from typing import Any, Literal, Union

__all__ = ["check_options"]

logger = logging.getLogger("gaussport")

_FIELD_TYPES: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def _field_types(cls: type) -> dict[str, Any]:
    """The declared type of every ``__init__`` field of the dataclass ``cls``, resolved once per class.

    Annotations are strings under ``from __future__ import annotations``; they are evaluated in the
    class's module. A name that cannot be resolved there (a class defined inside a function)
    leaves that field unchecked (``Any``).
    """
    cached = _FIELD_TYPES.get(cls)
    if cached is not None:
        return cached
    fields = [f for f in dataclasses.fields(cls) if f.init]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - any unresolvable annotation: resolve the fields one by one
        hints = {}
        namespace = dict(vars(sys.modules.get(cls.__module__, typing)))
        for f in fields:
            try:
                hints[f.name] = (
                    eval(f.type, namespace, dict(vars(cls))) if isinstance(f.type, str) else f.type
                )
            except Exception:  # noqa: BLE001
                logger.debug("%s.%s: annotation %r not resolvable; unchecked", cls.__name__, f.name, f.type)
    cached = {f.name: hints.get(f.name, Any) for f in fields}
    _FIELD_TYPES[cls] = cached
    return cached


def _kind(value: Any) -> type:
    """The kind of a value for ``Literal`` matching: ``True`` is not ``1``, ``np.int64(2)`` is ``2``."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, str):
        return str
    if isinstance(value, numbers.Integral):
        return int
    if isinstance(value, numbers.Real):
        return float
    return type(value)


def _fit(value: Any, tp: Any) -> tuple[Any, type[Exception] | None]:
    """``(value as stored, None)`` if ``value`` has the declared type ``tp``, else ``(value, error class)``.

    The error class is ``ValueError`` when the value has the right type but not an allowed value
    (NaN for a float, a string outside a ``Literal``), else ``TypeError``. ints and floats are
    stored as Python ``int``/``float``; forms this cannot check (type variables...) pass.
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value, None
    if tp is None or tp is type(None):
        return value, None if value is None else TypeError
    if origin is Literal:
        for choice in typing.get_args(tp):
            if _kind(value) is _kind(choice) and value == choice:
                return choice, None
        same_kind = any(_kind(value) is _kind(c) for c in typing.get_args(tp))
        return value, ValueError if same_kind else TypeError
    if origin is Union or origin is types.UnionType:
        errors = []
        for member in typing.get_args(tp):
            stored, error = _fit(value, member)
            if error is None:
                return stored, None
            errors.append(error)
        return value, ValueError if ValueError in errors else TypeError
    if tp is bool:
        return value, None if isinstance(value, bool) else TypeError
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value), None
        return value, TypeError
    if tp is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return value, TypeError
        try:
            number = float(value)
        except OverflowError:
            return value, ValueError
        return (number, None) if math.isfinite(number) else (value, ValueError)
    if tp is str:
        return value, None if isinstance(value, str) else TypeError
    if origin in (tuple, list):
        if not isinstance(value, origin):
            return value, TypeError
        args = typing.get_args(tp)
        if not args:
            return value, None
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            members = [args[0]] * len(value)
        elif len(args) == len(value):
            members = list(args)
        else:
            return value, ValueError
        stored = [_fit(v, m) for v, m in zip(value, members, strict=True)]
        errors = [e for _, e in stored if e is not None]
        if errors:
            return value, ValueError if ValueError in errors else TypeError
        return origin(v for v, _ in stored), None
    checkable = origin if isinstance(origin, type) else tp if isinstance(tp, type) else None
    if checkable is not None and not isinstance(value, checkable):
        return value, TypeError
    return value, None


def _allowed(tp: Any) -> str:
    """What a declared type accepts, in words, for error messages."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return "any value"
    if tp is None or tp is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin is Union or origin is types.UnionType:
        parts = [_allowed(m) for m in typing.get_args(tp)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    words = {bool: "True or False", int: "an int", float: "a finite float", str: "a str"}
    if tp in words:
        return words[tp]
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
            return f"a {origin.__name__} of {_allowed(args[0])}"
        return f"a {origin.__name__}" + (f" ({', '.join(_allowed(a) for a in args)})" if args else "")
    name = getattr(origin if origin is not None else tp, "__qualname__", repr(tp))
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _advice(value: Any, tp: Any) -> str:
    """The usual confusion behind a refused value, named (strings and bools are never converted)."""
    if isinstance(value, str):
        return " A string is not converted: pass the value itself (False, not 'False'; 2, not '2')."
    if isinstance(value, bool):
        return " True/False are not numbers here."
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if not math.isfinite(float(value)):
            return " Pass a finite number."
        if "an int" in _allowed(tp):
            return " Pass a whole number (2, not 2.0)."
    return ""


def check_options(solver: Any) -> None:
    """Check every field of a dataclass solver against its declared type; the one place of that rule.

    :class:`Solver` runs it when any subclass is built (before the subclass's own ``__post_init__``).
    ints and floats given as NumPy scalars are stored as Python ``int``/``float``.

    Raises:
        TypeError: for a value of the wrong type (the string ``'False'`` for a bool, ``2.0`` or
            ``True`` for an int, a tensor for a float...).
        ValueError: for a value of the right type that is not allowed (NaN or inf for a float, a
            string outside a ``Literal``).
    """
    cls = type(solver)
    if not dataclasses.is_dataclass(cls):
        return
    hints = getattr(cls, "option_hints", {})
    for name, tp in _field_types(cls).items():
        value = getattr(solver, name)
        stored, error = _fit(value, tp)
        if error is not None:
            shown = f"{value!r:.60}" + ("..." if len(repr(value)) > 60 else "")
            hint = f" {hints[name]}" if name in hints else ""
            raise error(
                f"{cls.__name__}: {name} must be {_allowed(tp)}; got {shown} "
                f"({type(value).__name__}).{_advice(value, tp)}{hint}"
            )
        if stored is not value:
            object.__setattr__(solver, name, stored)  # frozen dataclasses: the canonical Python value
