"""What the bad-input suite accepts: the exceptions docs/conventions.md promises, never a silent NaN,
never a file changed by a failed operation.

Every test in ``tests/bad_input/`` goes through these helpers, so the rule is stated once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The exceptions bad input may raise (docs/conventions.md#bad-input): a ValueError or TypeError naming
# the problem and the fix; FloatingPointError for non-finite results; FileNotFoundError for a missing
# file (a subclass of OSError that names the path).
ALLOWED: tuple[type[BaseException], ...] = (ValueError, TypeError, FloatingPointError, FileNotFoundError)


def rejected(call: Callable[[], Any], *, allowed: tuple[type[BaseException], ...] = ALLOWED) -> BaseException:
    """Run ``call``, which must fail with one of ``allowed`` and a message of at least a few words.

    Returns the exception. Raises AssertionError when ``call`` succeeds or raises anything else
    (the traceback of the unexpected exception is chained).
    """
    try:
        call()
    except allowed as exc:
        message = str(exc)
        assert len(message.split()) >= 4, f"{type(exc).__name__} without a helpful message: {message!r}"
        return exc
    except BaseException as exc:  # noqa: BLE001 - the point is to catch the wrong kind
        raise AssertionError(
            f"bad input raised {type(exc).__name__} ({exc}); expected one of "
            f"{', '.join(t.__name__ for t in allowed)} naming the problem"
        ) from exc
    raise AssertionError("bad input was accepted without an error")


def finite_or_rejected(call: Callable[[], Any]) -> Any:
    """Run ``call``: either it fails as :func:`rejected` requires, or every tensor it returns is finite."""
    try:
        out = call()
    except ALLOWED:
        return None
    except BaseException as exc:  # noqa: BLE001
        raise AssertionError(f"raised {type(exc).__name__} ({exc}); expected an allowed error") from exc
    tensors = [out] if isinstance(out, torch.Tensor) else [getattr(out, "x", None)]
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            assert bool(torch.isfinite(t).all()), "a non-finite result was returned without an error"
    return out


def digest(path: Path) -> str | None:
    """A fingerprint of a file (``None`` if it does not exist)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def unchanged_after_failure(path: Path, call: Callable[[], Any]) -> BaseException:
    """``call`` must fail as :func:`rejected` requires and leave ``path`` exactly as it was."""
    before = digest(path)
    exc = rejected(call, allowed=ALLOWED + (OSError,))
    assert digest(path) == before, f"a failed operation changed {path}"
    return exc
