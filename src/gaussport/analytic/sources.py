"""Data sources for fitting statistics: tensors, iterables, DataLoaders, ``.npy``/``.npz`` files and
image folders, all turned into one re-iterable stream of batches.

:func:`as_batches` returns a :class:`BatchSource`: calling it starts a fresh pass over the data
(an iterator of float tensors ``[b, *sample_shape]``), which is what multi-pass fits (the low-rank
range finder) need; it is also an iterable, so ``Gaussian.fit(as_batches(...))`` works as well.
Every pass draws a tqdm progress bar counting samples, so its rate is the throughput.

Value scaling (``scale``) turns stored integers into the units a model was trained on:

* ``"uint8_to_pm1"``: ``x / 127.5 - 1``, 0..255 -> [-1, 1] (EDM and diffusers pixel models;
  the default for image folders);
* ``"uint8_to_01"``: ``x / 255``, 0..255 -> [0, 1];
* ``"none"``: the values as stored, as floating point (the default for everything else).

``flip=True`` adds the horizontal mirror image (the last axis reversed) of every sample, as
EDM's training augmentation does: the statistics are those of the data set doubled with its
mirror images (``N`` doubles, the mean is left-right symmetric). ``limit`` counts samples before
the flip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import as_int

__all__ = ["IMAGE_SUFFIXES", "SCALES", "BatchSource", "as_batches", "image_files"]

SCALES = ("uint8_to_pm1", "uint8_to_01", "none")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DEFAULT_BATCH = 256


class BatchSource:
    """A re-iterable stream of batches: each call (or ``iter``) is a fresh pass over the data.

    Attributes:
        description: what the data are, for the statistics' ``source`` metadata.
        count: samples per pass (after ``limit`` and ``flip``), or ``None`` when unknown beforehand.
        shape: the sample shape, where known beforehand (tensors, arrays, image folders).
        scale: the value scaling applied (one of :data:`SCALES`).
    """

    def __init__(
        self,
        passes: Callable[[], Iterator[Tensor]],
        *,
        description: str,
        count: int | None,
        shape: tuple[int, ...] | None,
        scale: str,
        flip: bool,
        limit: int | None,
        disable: bool | None,
        one_shot: bool = False,
    ) -> None:
        self._passes = passes
        self.description, self.shape, self.scale = description, shape, scale
        self.flip, self.limit, self.disable = flip, limit, disable
        if count is not None and limit is not None:
            count = min(count, limit)
        self.count = None if count is None else count * (2 if flip else 1)
        self._one_shot, self._started = one_shot, False

    def __repr__(self) -> str:
        return (
            f"BatchSource({self.description}, count={self.count}, shape={self.shape}, scale={self.scale!r})"
        )

    def __iter__(self) -> Iterator[Tensor]:
        return self()

    def __call__(self) -> Iterator[Tensor]:
        if self._one_shot and self._started:
            raise ValueError(
                f"{self.description}: a one-shot iterable allows one pass over the data; pass a list "
                "of tensors, a DataLoader or a zero-argument function returning a fresh iterator for "
                "fits that take several passes."
            )
        self._started = True
        return self._stream()

    def _stream(self) -> Iterator[Tensor]:
        taken = 0
        with tqdm(total=self.count, disable=self.disable, desc="data", unit="sample", unit_scale=True) as bar:
            for raw in self._passes():
                batch = _scaled(raw, self.scale, self.description)
                if self.limit is not None:
                    batch = batch[: self.limit - taken]
                if batch.shape[0] == 0:
                    break
                taken += batch.shape[0]
                if self.flip:
                    batch = torch.cat([batch, batch.flip(-1)])
                bar.update(batch.shape[0])
                yield batch
                if self.limit is not None and taken >= self.limit:
                    break


def as_batches(
    data: Any,
    *,
    batch_size: int = _DEFAULT_BATCH,
    scale: str | None = None,
    flip: bool = False,
    limit: int | None = None,
    disable: bool | None = None,
) -> BatchSource:
    """A re-iterable stream of float batches ``[b, *sample_shape]`` from any of the data sources.

    Args:
        data: one of
            * a tensor or NumPy array ``[N, *sample_shape]`` (split into ``batch_size`` chunks);
            * a sequence (list, tuple) of such batches, or any re-iterable of them;
            * a ``torch.utils.data.DataLoader`` whose batches are tensors or ``(tensor, label, ...)``
              tuples or lists (the first element is the data); each pass iterates it afresh;
            * a one-shot iterable (a generator, an iterator): one pass only, a second raises;
            * a zero-argument callable returning a fresh iterable of batches;
            * the path of a ``.npy`` file (memory-mapped, read ``batch_size`` rows at a time) or of an
              ``.npz`` file holding one array (loaded whole: zip members cannot be mapped), read with
              ``allow_pickle=False``;
            * the path of a folder of PNG/JPEG images (sorted by file name; all the same size and
              mode; grey-scale images give ``[1, H, W]``, all others are converted to RGB
              ``[3, H, W]``; 16-bit images are refused).
        batch_size: samples per batch for tensors, arrays, files and folders (others keep their batches).
        scale: ``"uint8_to_pm1"``, ``"uint8_to_01"`` or ``"none"`` (module docstring); ``None``:
            ``"uint8_to_pm1"`` for image folders, ``"none"`` otherwise. The ``uint8`` scalings refuse
            data that are not ``uint8``.
        flip: add each sample's horizontal mirror image (EDM's augmentation; doubles ``N``).
        limit: use the first ``limit`` samples (before the flip).
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).

    Returns:
        A :class:`BatchSource`; floating-point data keep their dtype, integers become float32.

    Cost: image folders and files are checked before the first pass (the image headers are read:
    sizes and modes; ``.npy`` headers), so a bad source fails at once rather than mid-fit.

    Raises:
        TypeError: ``data`` of another kind, or an argument of the wrong type.
        ValueError: a missing or empty folder or file, images of different sizes or modes, an
            ``.npz`` with several arrays, an unknown ``scale`` or one that does not fit the dtype.
        FileNotFoundError: ``data`` is a path that does not exist.
    """
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    limit = as_int(limit, "limit", minimum=1, allow_none=True)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be True or False; got {flip!r}.")
    if scale is not None and (not isinstance(scale, str) or scale not in SCALES):
        raise ValueError(f"scale must be one of {SCALES} (or None: by the source); got {scale!r}.")
    common = {"flip": flip, "limit": limit, "disable": disable}
    if isinstance(data, (str, os.PathLike)):
        return _from_path(Path(data), batch_size, scale, common)
    scale = scale or "none"
    if isinstance(data, np.ndarray):
        data = _tensor_of(data, "the array")
    if isinstance(data, Tensor):
        tensor = data
        _check_scale(tensor.dtype, scale, "the tensor")
        if tensor.ndim < 2:
            raise ValueError(f"the tensor must have shape [N, *sample_shape]; got {tuple(tensor.shape)}.")
        return BatchSource(
            lambda: iter(tensor.split(batch_size)),
            description=f"a tensor {list(tensor.shape)}",
            count=tensor.shape[0],
            shape=tuple(tensor.shape[1:]),
            scale=scale,
            **common,
        )
    if isinstance(data, (bytes, bytearray)):
        raise TypeError("data must be a tensor, an iterable of batches, a DataLoader or a path; got bytes.")
    if _is_dataloader(data):
        loader = data
        dataset = getattr(loader, "dataset", None)
        try:
            count = len(dataset) if dataset is not None and not getattr(loader, "drop_last", False) else None
        except TypeError:
            count = None  # an iterable dataset
        return BatchSource(
            lambda: (_first(b) for b in loader),
            description=f"a DataLoader over {type(dataset).__name__}",
            count=count,
            shape=None,
            scale=scale,
            **common,
        )
    if isinstance(data, Iterable):
        iterable = data
        one_shot = iter(iterable) is iterable  # an iterator: consumed by one pass
        count = None
        if isinstance(iterable, Sequence):
            batches = [
                _tensor_of(b, f"batch {k}") if isinstance(b, np.ndarray) else b for k, b in enumerate(data)
            ]
            iterable = batches
            count = sum(b.shape[0] for b in batches if isinstance(b, Tensor) and b.ndim >= 1)
        what = f"a {type(data).__name__} (one-shot)" if one_shot else f"a {type(data).__name__} of batches"
        return BatchSource(
            lambda: (_first(b) for b in iterable),
            description=what,
            count=count,
            shape=None,
            scale=scale,
            one_shot=one_shot,
            **common,
        )
    if callable(data):
        factory = data
        return BatchSource(
            lambda: (_first(b) for b in factory()),
            description=f"batches from {getattr(factory, '__name__', type(factory).__name__)}()",
            count=None,
            shape=None,
            scale=scale,
            **common,
        )
    raise TypeError(
        "data must be a tensor or array [N, *sample_shape], an iterable or DataLoader of batches, a callable "
        f"returning one, or the path of a .npy/.npz file or an image folder; got {type(data).__name__}."
    )


# ---------------------------------------------------------------------- files and folders
def _from_path(path: Path, batch_size: int, scale: str | None, common: dict[str, Any]) -> BatchSource:
    text = os.fspath(path)
    if text == "":
        raise ValueError("the data path is empty; give a folder of images or a .npy/.npz file.")
    if not path.exists():
        raise FileNotFoundError(f"{text!r} does not exist; give a folder of images or a .npy/.npz file.")
    if path.is_dir():
        return _from_folder(path, batch_size, scale or "uint8_to_pm1", common)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(
            f"{text!r} is neither a folder of images nor a .npy/.npz file; give one of those (or load "
            "the data yourself and pass a tensor)."
        )
    array = _read_array(path)
    scale = scale or "none"
    _check_scale(_torch_dtype(array.dtype), scale, repr(text))
    if array.ndim < 2:
        raise ValueError(f"{text!r} holds an array of shape {array.shape}; expected [N, *sample_shape].")

    def passes() -> Iterator[Tensor]:
        for start in range(0, array.shape[0], batch_size):
            yield torch.from_numpy(np.array(array[start : start + batch_size]))  # a copy off the map

    return BatchSource(
        passes,
        description=f"{text} ({array.shape[0]} samples)",
        count=array.shape[0],
        shape=tuple(array.shape[1:]),
        scale=scale,
        **common,
    )


def _read_array(path: Path) -> np.ndarray:
    """The array of a ``.npy`` (memory-mapped) or single-array ``.npz`` file, never unpickled."""
    text = os.fspath(path)
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if len(names) != 1:
                    raise ValueError(
                        f"{text!r} holds {len(names)} arrays ({', '.join(names[:5])}); the data must be the "
                        "only array of the .npz (save it alone, or load it with numpy and pass the array)."
                    )
                array = archive[names[0]]
    except ValueError as exc:
        if text in str(exc):
            raise
        raise ValueError(f"{text!r} cannot be read as a NumPy array without unpickling ({exc}).") from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{text!r} is damaged or not a NumPy file ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(f"{text!r} holds {getattr(array, 'dtype', type(array))} data; expected numbers.")
    return array


def image_files(folder: Path) -> list[Path]:
    """The PNG/JPEG files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _from_folder(folder: Path, batch_size: int, scale: str, common: dict[str, Any]) -> BatchSource:
    from PIL import Image, UnidentifiedImageError

    text = os.fspath(folder)
    files = image_files(folder)
    if not files:
        raise ValueError(
            f"{text!r} holds no PNG or JPEG images; give a folder of images (*.png, *.jpg, *.jpeg)."
        )
    _check_scale(torch.uint8, scale, repr(text))
    first: tuple[tuple[int, int], str] | None = None
    for f in files:  # the headers only: sizes and modes, before any pixel is decoded
        try:
            with Image.open(f) as im:
                found = (im.size, _mode(im.mode, f))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(
                f"{os.fspath(f)!r} is not a readable image ({exc}); remove it from {text!r}."
            ) from exc
        if first is None:
            first = (found[0], found[1])
        elif found != first:
            raise ValueError(
                f"{os.fspath(f)!r} is {found[0][0]}x{found[0][1]} {found[1]} but {os.fspath(files[0])!r} is "
                f"{first[0][0]}x{first[0][1]} {first[1]}; all images of a folder must have the same size "
                "and colour mode (resize or convert them first)."
            )
    assert first is not None
    (width, height), mode = first
    channels = 1 if mode == "L" else 3

    def load(f: Path) -> np.ndarray:
        with Image.open(f) as im:
            pixels = np.asarray(im.convert(mode), dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def passes() -> Iterator[Tensor]:
        for start in range(0, len(files), batch_size):
            yield torch.from_numpy(np.stack([load(f) for f in files[start : start + batch_size]]))

    return BatchSource(
        passes,
        description=f"{text} ({len(files)} images {width}x{height} {mode})",
        count=len(files),
        shape=(channels, height, width),
        scale=scale,
        **common,
    )


def _mode(mode: str, path: Path) -> str:
    """The mode an image is read in: ``"L"`` for grey (with or without alpha), else ``"RGB"``."""
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        raise ValueError(
            f"{os.fspath(path)!r} is a {mode} (16-bit or float) image; convert the folder to 8-bit PNG "
            "or JPEG."
        )
    return "L" if mode in ("1", "L", "LA") else "RGB"


# ---------------------------------------------------------------------- batches
def _is_dataloader(data: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(data, DataLoader)


def _first(batch: Any) -> Any:
    """The data of a batch: the batch itself, or the first element of a ``(data, label, ...)`` tuple."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = _tensor_of(batch, "a batch")
    return batch


def _tensor_of(array: np.ndarray, what: str) -> Tensor:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what} has dtype {array.dtype}; expected numbers.")
    return torch.from_numpy(np.ascontiguousarray(array))


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _check_scale(dtype: torch.dtype, scale: str, what: str) -> None:
    if scale.startswith("uint8") and dtype != torch.uint8:
        raise ValueError(
            f"scale {scale!r} maps uint8 values 0..255, but {what} holds {dtype}; pass scale='none' for data "
            "already in model units."
        )


def _scaled(batch: Any, scale: str, description: str) -> Tensor:
    if not isinstance(batch, Tensor):
        raise TypeError(
            f"{description}: each batch must be a tensor [b, *sample_shape] (or a (tensor, label) tuple); "
            f"got {type(batch).__name__}."
        )
    _check_scale(batch.dtype, scale, f"a batch of {description}")
    if scale == "uint8_to_pm1":
        return batch.to(torch.float32) / 127.5 - 1.0
    if scale == "uint8_to_01":
        return batch.to(torch.float32) / 255.0
    return batch if batch.is_floating_point() else batch.to(torch.float32)
