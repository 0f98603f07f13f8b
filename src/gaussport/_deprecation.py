"""Deprecated names: one warning format, one release of grace (docs/architecture.md#names).

Old public names keep working for one release and warn with :class:`DeprecationWarning`, naming
the replacement. Module attributes go through :func:`module_aliases` (PEP 562 ``__getattr__``), old
keyword arguments through :func:`renamed_argument`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["REMOVED_IN", "warn", "module_aliases", "renamed_argument"]

REMOVED_IN = "0.3"


def warn(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in gaussport {REMOVED_IN}; use {new} instead.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def module_aliases(module: str, aliases: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving deprecated names: ``{old: (new name, getter)}``."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            new, get = aliases[name]
            warn(f"{module}.{name}", new)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def renamed_argument(function: str, old: str, new: str, old_value: Any, new_value: Any, default: Any) -> Any:
    """The value of a renamed keyword argument, warning when the old name was used.

    Raises:
        TypeError: if both names were given.
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise TypeError(f"{function}() got both {old}= and {new}=; pass only {new}=.")
    warn(f"{function}({old}=...)", f"{function}({new}=...)", stacklevel=4)
    return old_value
