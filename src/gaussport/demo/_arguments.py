"""Checks of the demo's arguments, shared by :mod:`gaussport.demo` and the ``gaussport`` command line.

Every check runs before anything is loaded, computed or written, and fails with a ``ValueError`` or
``TypeError`` (``FileNotFoundError`` for a missing model) whose one-line message names the problem
and the fix (docs/conventions.md#bad-input). Each takes the name the caller knows the value by
(``batch`` in Python, ``--batch`` on the command line).

The classes at the end (:class:`Integer`, :class:`Number`, :class:`Directory`, :class:`Device`,
:class:`SolverName`) are the same checks as ``argparse`` types: the command line declares each
flag's range or kind with them, so a bad value is refused while the command line is parsed, and the
bad-input tests read the declared ranges back to generate values outside them.
"""

from __future__ import annotations

import argparse
import numbers
import os
from pathlib import Path

import torch

from ..digits.files import CLASSIFIER_FILE, DENOISER_FILE, GAUSSIAN_FILE, TEST_SET_FILE

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 <= seed < 2**64
TRAIN_HINT = "`gaussport train-demo --out DIR` writes one"


def _named(name: str, rest: str) -> str:
    """``name rest``, or ``rest`` alone for the command line, whose parser names the flag itself."""
    return f"{name} {rest}" if name else rest


def integer(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; booleans and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_named(name, f"must be an integer; got {value!r} of type {type(value).__name__}."))
    out = int(value)
    if out < minimum or (maximum is not None and out > maximum):
        raise ValueError(_named(name, f"must be {describe(minimum, maximum)}; got {out}."))
    return out


def describe(minimum: int, maximum: int | None = None) -> str:
    """``'a positive integer'``, ``'an integer from 2 to 8'``, ...: the range in words."""
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum == 0:
        return "a non-negative integer"
    if minimum == 1:
        return "a positive integer"
    return f"an integer of at least {minimum}"


def seeds(name: str, first: object, count: int) -> int:
    """The first of ``count`` consecutive seeds; all of them must fit a torch generator."""
    start = integer(name, first, minimum=0)
    if start + count > SEED_LIMIT:
        raise ValueError(
            f"{name} = {start} with {count} seeds runs past the largest generator seed 2**64 - 1; "
            "give a smaller seed."
        )
    return start


def noise_level(name: str, value: object, low: float, high: float) -> float:
    """A teleport level in ``(low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(_named(name, f"must be a number; got {value!r} of type {type(value).__name__}."))
    out = float(value)
    if not low < out <= high:  # NaN fails too
        where = f"{name} = {out}" if name else f"{out}"
        raise ValueError(f"{where} must lie in ({low:g}, {high:g}]; pick a noise level inside.")
    return out


def device(value: torch.device | str | None, name: str = "device") -> torch.device:
    """A device this machine can run on: parsed by ``torch.device`` and tried with a one-element tensor.

    A device type torch does not know, CUDA without a GPU, an index past the last GPU and devices
    without data (``meta``) all fail here, with one line, instead of deep inside the first model call.
    """
    if value is None:
        return torch.device("cpu")
    if not isinstance(value, (str, torch.device)):
        raise TypeError(
            _named(name, f"must be a string such as 'cpu' or 'cuda'; got {type(value).__name__}.")
        )
    cuda = "cuda is available" if torch.cuda.is_available() else "this machine has no CUDA device"
    try:
        parsed = torch.device(value)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            _named(name, f"{str(value)!r} is not a torch device; give cpu or cuda ({cuda}).")
        ) from exc
    try:
        torch.zeros(1, device=parsed).cpu()
    except Exception as exc:  # noqa: BLE001 - any failure means the device cannot run the model
        reason = " ".join(str(exc).split()).split(". ")[0].rstrip(".") or type(exc).__name__
        raise ValueError(
            _named(
                name,
                f"{str(parsed)!r} cannot run here ({reason[:120]}); give cpu, or a device this machine "
                f"has ({cuda}).",
            )
        ) from exc
    return parsed


def _path(name: str, path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(_named(name, f"must be a path; got {type(path).__name__}."))
    text = os.fspath(path)
    if not isinstance(text, str) or text == "":
        raise ValueError(_named(name, "is empty; give a directory path."))
    return text


def writable_directory(name: str, path: str | os.PathLike[str]) -> Path:
    """A directory that exists and is writable, or can be created: nothing is created here.

    Refuses an empty path, a path through an existing file (``FILE`` or ``FILE/sub``) and a
    directory the user cannot write into.
    """
    text = _path(name, path)
    target = Path(text)
    probe = target
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent  # the nearest part of the path that is there already
    if not probe.is_dir():
        what = "a dangling link" if probe.is_symlink() and not probe.exists() else "a file"
        where = text if probe == target else f"{text}: {os.fspath(probe)} in its path"
        raise ValueError(
            _named(
                name,
                f"{where} is {what}, not a directory; give a directory path that is free or a directory.",
            )
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            _named(name, f"{text}: {os.fspath(probe)} is not writable; give a directory you can write.")
        )
    return target


def model_directory(name: str, path: str | os.PathLike[str], *, frechet: bool = True) -> Path:
    """A directory holding a digits model (the files the loaders read; the classifier and test split
    only with ``frechet``), as written by ``gaussport train-demo --out DIR``."""
    text = _path(name, path)
    where = Path(text)
    if not where.exists():
        raise FileNotFoundError(
            _named(name, f"{text}: no such directory; {TRAIN_HINT}, or leave it out for the shipped model.")
        )
    if not where.is_dir():
        raise ValueError(
            _named(name, f"{text} is a file; give the directory `gaussport train-demo --out DIR` wrote.")
        )
    missing = [n for n in (DENOISER_FILE, GAUSSIAN_FILE) if not (where / n).is_file()]
    if missing:
        raise FileNotFoundError(
            _named(name, f"{text} holds no digits model ({', '.join(missing)} missing); {TRAIN_HINT}.")
        )
    missing = [n for n in (CLASSIFIER_FILE, TEST_SET_FILE) if frechet and not (where / n).is_file()]
    if missing:
        raise FileNotFoundError(
            _named(
                name,
                f"{text} lacks what the Frechet distance needs ({', '.join(missing)}); turn it off with 0 "
                "Frechet samples, or give a model `gaussport train-demo --out DIR` wrote.",
            )
        )
    return where


# ---------------------------------------------------------------------- argparse types
class _ArgumentType:
    """An ``argparse`` type: the check above, its message as the parser's one-line error."""

    name = "value"

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.name

    def __call__(self, text: str) -> object:
        try:
            return self.convert(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from exc

    def convert(self, text: str) -> object:
        raise NotImplementedError


class Integer(_ArgumentType):
    """An integer in ``[minimum, maximum]`` (``maximum=None``: no upper bound)."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an integer; give {describe(self.minimum, self.maximum)}."
            ) from None
        return integer("", value, minimum=self.minimum, maximum=self.maximum)


class Number(_ArgumentType):
    """A finite number in ``(low, high]``."""

    name = "number"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a number; give a noise level in ({self.low:g}, {self.high:g}]."
            ) from None
        return noise_level("", value, self.low, self.high)


class Directory(_ArgumentType):
    """A directory: ``"output"`` (writable, or creatable: :func:`writable_directory`) or ``"model"``
    (a digits model is there, the classifier aside: :func:`model_directory`)."""

    name = "directory"

    def __init__(self, role: str) -> None:
        if role not in ("output", "model"):
            raise ValueError(f"role must be 'output' or 'model'; got {role!r}.")
        self.role = role

    def __call__(self, text: str) -> object:
        try:
            return super().__call__(text)
        except FileNotFoundError as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from exc

    def convert(self, text: str) -> Path:
        if self.role == "output":
            return writable_directory("", text)
        return model_directory("", text, frechet=False)


class Device(_ArgumentType):
    """A torch device that runs here (:func:`device`), limited to ``only`` where given."""

    name = "device"

    def __init__(self, only: tuple[str, ...] | None = None, why: str = "") -> None:
        self.only, self.why = only, why

    def convert(self, text: str) -> torch.device:
        if self.only is not None:
            try:
                kind = torch.device(text).type
            except (RuntimeError, ValueError):
                kind = None  # not a device at all: device() below says so
            if kind is not None and kind not in self.only:
                raise ValueError(f"{text}: {self.why}")
        return device(text, name="")


class SolverName(_ArgumentType):
    """A registered solver name (read from the registry when the command line is parsed)."""

    name = "solver"

    def convert(self, text: str) -> str:
        from ..solvers import get as get_solver

        get_solver(text)  # an unknown name: the message lists the registered ones
        return text


def _suffix_list(suffixes: tuple[str, ...]) -> str:
    return " or ".join(suffixes)


class DataPath(_ArgumentType):
    """Data to fit statistics to: a folder holding PNG/JPEG images, or a ``.npy``/``.npz`` file.

    Only the path is checked here (it exists, a folder holds images, a file has a data suffix);
    :func:`gaussport.analytic.sources.as_batches` checks the contents (image sizes, arrays).
    """

    name = "data"
    suffixes = (".npy", ".npz")

    def convert(self, text: str) -> Path:
        from ..analytic.sources import IMAGE_SUFFIXES, image_files

        if text == "":
            raise ValueError("the data path is empty; give a folder of images or a .npy/.npz file.")
        path = Path(text)
        if not path.exists():
            what = "a dangling link" if path.is_symlink() else "no such file or folder"
            raise ValueError(f"{text}: {what}; give a folder of images or a .npy/.npz file.")
        if path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise ValueError(f"{text}: the folder is not readable; give a folder you can read.")
            if not image_files(path):
                raise ValueError(
                    f"{text}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of "
                    "images or a .npy/.npz file."
                )
            return path
        if path.suffix.lower() not in self.suffixes:
            raise ValueError(f"{text} is neither a folder of images nor a .npy/.npz file; give one of those.")
        return path


class InputFile(_ArgumentType):
    """An existing file whose name ends in one of ``suffixes`` (e.g. a statistics file)."""

    name = "file"

    def __init__(self, suffixes: tuple[str, ...], what: str) -> None:
        self.suffixes, self.what = suffixes, what

    def convert(self, text: str) -> Path:
        if text == "":
            raise ValueError(f"the path is empty; give a {self.what} file ({_suffix_list(self.suffixes)}).")
        path = Path(text)
        if not path.exists():
            what = "a dangling link" if path.is_symlink() else "no such file"
            raise ValueError(f"{text}: {what}; give a {self.what} file ({_suffix_list(self.suffixes)}).")
        if not path.is_file():
            raise ValueError(
                f"{text} is a directory; give a {self.what} file ({_suffix_list(self.suffixes)})."
            )
        if not text.lower().endswith(self.suffixes):
            raise ValueError(f"{text} is not a {self.what} file; give a {_suffix_list(self.suffixes)} file.")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{text} is not readable; give a {self.what} file you can read.")
        return path


class OutputFile(_ArgumentType):
    """A file to write, ending in one of ``suffixes``, in a directory that is writable or can be
    created (:func:`writable_directory`); an existing file is replaced atomically."""

    name = "file"

    def __init__(self, suffixes: tuple[str, ...], what: str) -> None:
        self.suffixes, self.what = suffixes, what

    def convert(self, text: str) -> Path:
        if text == "":
            raise ValueError(
                f"the path is empty; give a {self.what} file name ({_suffix_list(self.suffixes)})."
            )
        path = Path(text)
        if not text.lower().endswith(self.suffixes):
            raise ValueError(
                f"{text}: the {self.what} file name must end in {_suffix_list(self.suffixes)}; "
                f"give e.g. {path.stem or 'out'}{self.suffixes[0]}."
            )
        if path.is_dir() or (path.is_symlink() and not path.exists()):
            what = "a directory" if path.is_dir() else "a dangling link"
            raise ValueError(
                f"{text} is {what}; give a {self.what} file name ({_suffix_list(self.suffixes)})."
            )
        writable_directory("", path.parent)
        if path.exists() and not os.access(path, os.W_OK):
            raise ValueError(f"{text} is not writable; give a file you can write.")
        return path


class RecipeFile(InputFile):
    """A sampling recipe: an existing ``.json`` file (read by the command's check), or ``none``."""

    def __init__(self) -> None:
        super().__init__((".json",), "recipe")

    def convert(self, text: str) -> Path | str:
        return "none" if text == "none" else super().convert(text)


class Fraction(Number):
    """A finite number in ``(low, high]`` that is no noise level: a rate, a fraction (``what`` names it)."""

    def __init__(self, low: float, high: float, what: str) -> None:
        super().__init__(low, high)
        self.what = what

    def convert(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a number; give {self.what} in ({self.low:g}, {self.high:g}]."
            ) from None
        if not self.low < value <= self.high:  # NaN fails too
            raise ValueError(f"{value:g} is outside ({self.low:g}, {self.high:g}]; give {self.what} inside.")
        return value
