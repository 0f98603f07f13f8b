"""gaussport's ``.npz`` files: a format tag, JSON metadata with a version, and plain arrays.

Every file the library writes (statistics, mixtures, EMS, estimator checkpoints, the digits test
split) goes through :func:`write_npz` and is read back by :func:`read_npz`, which never unpickles
(``np.load(allow_pickle=False)``) and turns every way a foreign or damaged file can fail into one
``ValueError`` that names the file and what was expected (docs/conventions.md#files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["write_npz", "read_npz"]

_TAG = "gaussport_format"
_META = "metadata"


def write_npz(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    metadata: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    atomic: bool = False,
) -> None:
    """Write ``arrays`` with the format tag ``fmt`` and ``metadata`` (plus ``version``) as JSON.

    With ``atomic`` the file is written next to ``path`` and renamed into place, so an interrupted
    write never leaves a half-written file (checkpoints).
    """
    target = os.fspath(path)
    tmp = target + ".tmp" if atomic else target
    meta = {"version": version, **metadata}
    with open(tmp, "wb") as f:
        np.savez(f, **{_TAG: np.array(fmt), _META: np.array(json.dumps(meta))}, **arrays)
    if atomic:
        os.replace(tmp, target)


def read_npz(
    path: str | os.PathLike[str], fmt: str, version: int, *, what: str, hint: str = ""
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz` with format tag ``fmt``; never unpickles.

    Args:
        path: the file.
        fmt: the expected format tag.
        version: the newest format version this gaussport reads.
        what: the kind of file, for messages (e.g. ``"statistics"``).
        hint: appended to the "not ours" message (how to get a proper file).

    Returns:
        ``(metadata, arrays)``: the JSON metadata and every other array in the file.

    Raises:
        ValueError: the file is not ours (pickles, bare ``.npy``, other archives, junk), its
            metadata is damaged, or its version is newer than ``version``.
    """
    name = repr(os.fspath(path))
    not_ours = f"{name} is not a gaussport {what} file{hint}"
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(not_ours) from exc
    if not hasattr(data, "files"):  # a bare .npy array
        raise ValueError(not_ours)
    with data:
        if _TAG not in data.files or str(data[_TAG]) != fmt:
            raise ValueError(not_ours)
        try:
            arrays = {key: data[key] for key in data.files if key != _TAG}
        except (ValueError, OSError) as exc:  # e.g. object arrays, which would need unpickling
            raise ValueError(not_ours) from exc
    try:
        meta = json.loads(str(arrays.pop(_META)))
        found = int(meta["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} has damaged metadata: {exc}") from exc
    if found > version:
        raise ValueError(
            f"{name} has format version {found}; this gaussport reads up to {version}. Upgrade gaussport."
        )
    return meta, arrays
