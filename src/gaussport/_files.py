"""gaussport's files: one atomic writer, and ``.npz`` or ``.safetensors`` files with a format tag, JSON
metadata and plain arrays.

Every file the library writes goes through :func:`atomic_writer`: the content is produced in a
temporary file beside the target and renamed over it only when complete, so a failed or
interrupted write leaves the target exactly as it was (docs/conventions.md#files). The ``.npz``
files (statistics, mixtures, EMS, estimator checkpoints, the digits test split) are written by
:func:`write_npz`, which validates metadata and arrays before anything is opened, and read back
by :func:`read_npz`, which never unpickles
(``np.load(allow_pickle=False)``) and turns every way a foreign or damaged file can fail into one
``ValueError`` that names the file and what was expected (docs/conventions.md#files).
:func:`write_safetensors` and :func:`read_safetensors` are the same for safetensors files (the
statistics ``gaussport fit`` writes): the same metadata and :class:`Array` declarations, plus a
SHA-256 of metadata and arrays, because safetensors itself has no checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "Array",
    "atomic_writer",
    "finite_json",
    "write_npz",
    "read_npz",
    "write_safetensors",
    "read_safetensors",
]

_TAG = "gaussport_format"
_META = "metadata"


def finite_json(text: str) -> Any:
    """``json.loads`` as the package's JSON files are read: ``NaN`` and ``Infinity``, which Python's
    json accepts, are refused, so every number a loader sees is finite.

    Raises:
        ValueError: not JSON (a :class:`json.JSONDecodeError`), or a non-finite constant.
    """
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, not a finite number")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` on success.

    If the body raises (or the process dies), the temporary file is removed and ``path`` is left
    byte for byte as it was, or absent if it was absent. The directory must exist; nothing else is
    created.

    Args:
        path: the target file.
        mode: ``"wb"`` (binary) or ``"w"`` (text; ``open_kwargs`` such as ``newline`` apply).

    Raises:
        FileNotFoundError: the target's directory does not exist.
        ValueError: ``path`` is an existing directory, or ``mode`` is not a write mode.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer writes whole files; mode must be 'w' or 'wb', got {mode!r}.")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{os.fspath(path)!r} is a directory; give a file path to write.")
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {os.fspath(path)!r}: the directory {os.fspath(parent)!r} does not exist; "
            "create it first."
        )
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            # mkstemp creates mode 0600; keep the permissions the existing file had.
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_npz(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    metadata: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> None:
    """Write ``arrays`` with the format tag ``fmt`` and ``metadata`` (plus ``version``) as JSON.

    Everything is validated before the target is touched: the metadata must be JSON (plain
    ``int``/``float``/``str``/``bool``/lists/dicts; a NumPy scalar or a tensor is refused), and
    every array a plain numeric or string array that :func:`read_npz` can load without unpickling.
    The file is then written through :func:`atomic_writer`.

    Raises:
        TypeError: metadata JSON cannot encode, or an object array.
        FileNotFoundError: the directory of ``path`` does not exist.
    """
    text = _metadata_json(path, version, metadata, arrays, kinds="biufcUS")
    with atomic_writer(path) as f:
        np.savez(f, **{_TAG: np.array(fmt), _META: np.array(text)}, **arrays)


def _metadata_json(
    path: str | os.PathLike[str],
    version: int,
    metadata: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    kinds: str,
) -> str:
    """The metadata (with ``version``) as JSON, after checking it and every array (both writers).

    Raises:
        TypeError: metadata JSON cannot encode, or an array that is not a NumPy array whose dtype
            kind is in ``kinds`` (object arrays would need pickling to read back).
    """
    try:
        text = json.dumps({"version": version, **metadata})
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cannot write {os.fspath(path)!r}: its metadata is not plain JSON ({exc}); pass Python "
            "int/float/str values (e.g. int(n) for a NumPy integer, t.item() for a tensor)."
        ) from exc
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
            what = f"of dtype {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            raise TypeError(
                f"cannot write {os.fspath(path)!r}: {key!r} is {what}; pass a numeric NumPy array."
            )
    return text


@dataclass(frozen=True)
class Array:
    """What one array of a file must be; :func:`read_npz` checks it before returning the array.

    Attributes:
        kinds: the accepted NumPy dtype kinds (``"f"`` floating point, ``"i"``/``"u"`` integers,
            ``"U"`` text); a bool, complex or object array is refused unless listed.
        ndim: the number of dimensions, or ``None`` for any.
        finite: refuse NaN and infinite values (floating-point arrays).
        nonnegative: refuse negative values.
        required: a missing array is an error (else it is simply absent from the result).
    """

    kinds: str = "f"
    ndim: int | None = None
    finite: bool = True
    nonnegative: bool = False
    required: bool = True

    def problem(self, value: np.ndarray) -> str | None:
        """What is wrong with ``value``, or ``None``."""
        if value.dtype.kind not in self.kinds:
            return f"has dtype {value.dtype}, expected {_KIND_NAMES.get(self.kinds, self.kinds)}"
        if self.ndim is not None and value.ndim != self.ndim:
            return f"has {value.ndim} dimension(s) (shape {value.shape}), expected {self.ndim}"
        if self.finite and value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
            return "contains NaN or infinite values"
        if self.nonnegative and value.dtype.kind in "fi" and bool((value < 0).any()):
            return "contains negative values"
        return None


_KIND_NAMES = {"f": "a floating-point array", "iu": "an integer array", "u": "an unsigned integer array"}

Spec = Mapping[str, Array]


def read_npz(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    *,
    what: str,
    arrays: Spec | Callable[[dict[str, Any]], Spec],
    fields: Mapping[str, tuple[type, ...]] | None = None,
    hint: str = "",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz` with format tag ``fmt``; never unpickles.

    Every way a file can be damaged (not a zip archive, truncated, a flipped byte caught by the
    CRC or the array headers, zlib errors, object arrays, missing arrays or metadata keys, arrays
    of the wrong dtype, dimension or with NaN) becomes one ``ValueError`` naming the file and the
    problem. Only the declared arrays are returned, each checked against its :class:`Array`.

    Args:
        path: the file.
        fmt: the expected format tag.
        version: the newest format version this gaussport reads.
        what: the kind of file, for messages (e.g. ``"statistics"``).
        arrays: the expected arrays by name, or a function of the metadata returning them (when
            the names depend on it, as for the components of a mixture).
        fields: required metadata keys and their accepted JSON types (``int`` excludes ``bool``).
        hint: appended to the "not ours" message (how to get a proper file).

    Returns:
        ``(metadata, arrays)``: the JSON metadata and the declared arrays.

    Raises:
        ValueError: the file is not ours (pickles, bare ``.npy``, other archives, junk), is
            damaged, its version is newer than ``version``, or an array or metadata key is missing
            or not what was declared.
        FileNotFoundError: the file does not exist.
    """
    name = _existing_file(path, what)
    with _failures_named(name, f"{name} is not a gaussport {what} file{hint}"):
        contents = _read_members(path, fmt)
    try:
        raw = contents.pop(_META)
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise ValueError(f"metadata is a {raw.dtype} array of shape {raw.shape}")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{name} has damaged metadata: {exc}; {_REWRITE}") from exc
    return _checked(name, str(raw), contents, version, arrays, fields)


def _existing_file(path: str | os.PathLike[str], what: str) -> str:
    """``repr`` of ``path`` for messages, once it is known to be an existing file (both readers)."""
    name = repr(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} does not exist; check the path.")
    if os.path.isdir(path):
        raise ValueError(f"{name} is a directory; give the path of a gaussport {what} file.")
    return name


@contextlib.contextmanager
def _failures_named(name: str, not_ours: str | None) -> Iterator[None]:
    """Every low-level failure of reading a damaged file as one ``ValueError`` naming the file.

    ``_NotOurs`` (a foreign file) becomes ``not_ours``; anything else "damaged or truncated".
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every low-level failure of a damaged file is one error
        if isinstance(exc, _NotOurs) and not_ours is not None:
            raise ValueError(not_ours) from exc.__cause__
        raise ValueError(f"{name} is damaged or truncated ({type(exc).__name__}: {exc}); {_REWRITE}") from exc


def _checked(
    name: str,
    text: str,
    contents: dict[str, np.ndarray],
    version: int,
    arrays: Spec | Callable[[dict[str, Any]], Spec],
    fields: Mapping[str, tuple[type, ...]] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON metadata ``text`` and the declared arrays of ``contents``, each checked (both readers)."""
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict):
            raise ValueError(f"metadata is a JSON {type(meta).__name__}, not an object")
        found = meta["version"]
        if not isinstance(found, int) or isinstance(found, bool):
            raise ValueError(f"version {found!r} is not an integer")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} has damaged metadata: {exc}; {_REWRITE}") from exc
    if found > version:
        raise ValueError(
            f"{name} has format version {found}; this gaussport reads up to {version}. Upgrade gaussport."
        )
    for key, types in (fields or {}).items():
        if key not in meta:
            raise ValueError(f"{name} has damaged metadata: the key {key!r} is missing; {_REWRITE}")
        value = meta[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(
                f"{name} has damaged metadata: {key!r} is {value!r}, expected {expected}; {_REWRITE}"
            )
    try:
        spec = arrays(meta) if callable(arrays) else arrays
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} has damaged metadata: {exc}; {_REWRITE}") from exc
    out: dict[str, np.ndarray] = {}
    for key, expected in spec.items():
        if key not in contents:
            if expected.required:
                raise ValueError(f"{name} is incomplete: the array {key!r} is missing; {_REWRITE}")
            continue
        problem = expected.problem(contents[key])
        if problem is not None:
            raise ValueError(f"{name} is damaged: the array {key!r} {problem}; {_REWRITE}")
        out[key] = contents[key]
    return meta, out


_REWRITE = "write the file again with the gaussport function that made it"


class _NotOurs(Exception):
    """The file is no gaussport file of the expected format at all (rather than a damaged one)."""


def _read_members(path: str | os.PathLike[str], fmt: str) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the zip archive at ``path``, CRC-checked, without unpickling.

    Raises:
        _NotOurs: the file is not a zip archive, or one without the format tag ``fmt``.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # not even the start of a zip archive: some other file
            raise _NotOurs() from exc
        raise
    out: dict[str, np.ndarray] = {}
    with archive:
        names = archive.namelist()
        if _TAG + ".npy" not in names:
            raise _NotOurs()
        # The tag first: a zip archive of another program is "not ours", not "damaged".
        for member in [_TAG + ".npy"] + [n for n in names if n != _TAG + ".npy"]:
            if not member.endswith(".npy"):
                raise ValueError(f"unexpected member {member!r}")
            if _holds_objects(archive, member):  # would need unpickling: another program's file
                raise _NotOurs()
            with archive.open(member) as f:
                value = np.lib.format.read_array(f, allow_pickle=False)
                if f.read(1):  # also makes zipfile verify the member's CRC
                    raise ValueError(f"trailing data after the array {member!r}")
            if member == _TAG + ".npy" and (value.dtype.kind != "U" or value.ndim != 0 or str(value) != fmt):
                raise _NotOurs()
            out[member[: -len(".npy")]] = value
    return out


def _holds_objects(archive: zipfile.ZipFile, member: str) -> bool:
    """Whether the ``.npy`` header of ``member`` declares an object dtype (read no further)."""
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            _, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return False  # read_array names the unsupported version
    return bool(dtype.hasobject)


# ---------------------------------------------------------------------- safetensors
_DIGEST = "sha256"


def _c_order(value: np.ndarray) -> np.ndarray:
    """``value`` in C order, 0-d arrays kept 0-d (``np.ascontiguousarray`` makes them 1-d)."""
    return value if value.flags.c_contiguous else value.copy(order="C")


def _safetensors_digest(text: str, arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the metadata JSON and every array (name, dtype, shape, bytes, in name order).

    safetensors has no checksum of its own, so a flipped bit in the data would load silently; this
    one covers everything but the format tag (whose damage makes the file "not ours").
    """
    digest = hashlib.sha256(text.encode())
    for key in sorted(arrays):
        value = _c_order(arrays[key])
        digest.update(f"\0{key}:{value.dtype.str}:{value.shape}\0".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def write_safetensors(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    metadata: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> None:
    """:func:`write_npz` for a safetensors file: the same checks, layout and atomic write.

    The safetensors header's string metadata holds the format tag (``gaussport_format``), the
    JSON metadata with ``version`` (``metadata``) and a SHA-256 of both (``sha256``, see
    :func:`read_safetensors`). The file is serialised in memory first (``safetensors.numpy.save``,
    a transient copy of the arrays' bytes), then written through :func:`atomic_writer`.

    Raises:
        TypeError: metadata JSON cannot encode, or an array that is not a numeric NumPy array.
        FileNotFoundError: the directory of ``path`` does not exist.
    """
    from safetensors.numpy import save

    text = _metadata_json(path, version, metadata, arrays, kinds="biuf")
    contiguous = {key: _c_order(value) for key, value in arrays.items()}
    header = {_TAG: fmt, _META: text, _DIGEST: _safetensors_digest(text, contiguous)}
    payload = save(contiguous, metadata=header)
    with atomic_writer(path) as f:
        f.write(payload)


def read_safetensors(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    *,
    what: str,
    arrays: Spec | Callable[[dict[str, Any]], Spec],
    fields: Mapping[str, tuple[type, ...]] | None = None,
    hint: str = "",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_safetensors`: :func:`read_npz`'s arguments and checks.

    safetensors holds raw bytes and never unpickles. A file without the tag ``fmt`` in its header
    metadata (another program's safetensors, a zip archive, junk) is "not ours"; a header that
    does not parse, offsets past the end, a truncated file and bytes that do not match the stored
    SHA-256 are "damaged"; the version, metadata keys and declared arrays are then checked as
    :func:`read_npz` checks them. Every one of these is a ``ValueError`` naming the file.
    The digest is checked before the version is read, so the digest scheme stays the same in every
    format version.

    Raises:
        ValueError: the file is not ours, damaged, of a newer version, or an array or metadata key
            is missing or not what was declared.
        FileNotFoundError: the file does not exist.
    """
    name = _existing_file(path, what)
    from safetensors import safe_open

    with _failures_named(name, f"{name} is not a gaussport {what} file{hint}"):
        header = _safetensors_header(path, fmt)
    # safetensors raises SafetensorError, OSError, ValueError, TypeError...: all mean damaged.
    with _failures_named(name, None):
        with safe_open(os.fspath(path), framework="np") as f:
            stored = f.metadata() or {}
            contents = {key: f.get_tensor(key) for key in f.keys()}
        text, digest = stored[_META], stored.get(_DIGEST)
        if digest is None:
            raise ValueError("its header has no SHA-256 of the contents")
        if stored != header:
            raise ValueError("the header changed while it was read")
    if not isinstance(text, str) or _safetensors_digest(text, contents) != digest:
        raise ValueError(
            f"{name} is damaged: its contents do not match the SHA-256 they were saved with; {_REWRITE}"
        )
    return _checked(name, text, contents, version, arrays, fields)


def _safetensors_header(path: str | os.PathLike[str], fmt: str) -> dict[str, str]:
    """The string metadata of a safetensors file's header, read without the data.

    Raises:
        _NotOurs: the file does not start like a safetensors file, or has no tag ``fmt``.
        ValueError: the header is cut short or is not the JSON it should be.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _NotOurs() if size == 0 else ValueError(f"only {len(head)} bytes")
        length = int.from_bytes(head, "little")
        if head[:4] == b"PK\x03\x04" or length > size - 8:
            if head[:4] == b"PK\x03\x04" or length > 100_000_000:  # not a header length at all
                raise _NotOurs()
            raise ValueError(f"the header of {length} bytes runs past the end of the {size}-byte file")
        raw = f.read(length)
    if not raw.startswith(b"{"):
        raise _NotOurs()
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get(_TAG) != fmt:
        raise _NotOurs()
    return meta
