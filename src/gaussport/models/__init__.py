"""Deprecated: the shipped digits model lives in :mod:`gaussport.digits` (this name goes in gaussport 0.3).

Every public name of ``gaussport.models`` and of its submodules still works and warns with a
:class:`DeprecationWarning` naming its new place: ``gaussport.models.X`` is ``gaussport.digits.X``,
the submodules ``unet``, ``classifier``, ``train`` and ``release`` keep their names under
:mod:`gaussport.digits`, and ``gaussport.models.digits`` (the loaders) is
:mod:`gaussport.digits.files`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import _deprecation
from .. import digits as _digits


def _forward(old: str, new: ModuleType, names: tuple[str, ...] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``names`` (default: every public name) of ``new``, warning."""
    chosen = names if names is not None else tuple(n for n in vars(new) if not n.startswith("_"))
    return _deprecation.module_aliases(
        old, {n: (f"{new.__name__}.{n}", lambda n=n: getattr(new, n)) for n in chosen}
    )


__getattr__ = _forward(__name__, _digits, tuple(_digits.__all__))
