"""The shipped 8x8-digits model: a trained denoiser, a feature classifier, Gaussian statistics, test split.

Everything here is read from ``gaussport/data/`` (package data) with :mod:`importlib.resources`,
without unpickling: network weights are safetensors files, statistics and the test split are
``.npz`` files read with ``np.load(allow_pickle=False)``. The files are produced by
:func:`gaussport.digits.train.train_digits` (``python benchmarks/train_demo.py --out src/gaussport/data``);
``gaussport/data/DIGITS_MODEL.md`` records how.

Data: the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin & Kaynak 1998) as
distributed by scikit-learn (``sklearn.datasets.load_digits``: 1,797 images of 8x8 pixels with
values 0..16), licensed CC BY 4.0. In model space an image is ``x = pixels / 8 - 1`` in [-1, 1].

Example:
    >>> import torch, gaussport
    >>> from gaussport.digits import load_digits_denoiser, load_digits_gaussian
    >>> net, g = load_digits_denoiser(), load_digits_gaussian()
    >>> x = 80.0 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> sigmas = gaussport.grids.karras(5, 0.002, 80.0)
    >>> sol = gaussport.sample(net, x, sigmas, "heun", warm_start=g, sigma_skip=sigmas[1], disable=True)
    >>> sol.x.shape
    torch.Size([4, 1, 8, 8])
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._files import Array, atomic_writer, read_npz, write_npz
from ..analytic import Gaussian, GaussianMixture
from ..tuning.recipe import Recipe
from .classifier import DigitsClassifier
from .unet import DigitsUNet

__all__ = [
    "DigitsTestSet",
    "load_digits_denoiser",
    "load_digits_classifier",
    "load_digits_gaussian",
    "load_digits_class_gaussians",
    "load_digits_recipe",
    "load_digits_test_set",
    "pixels_to_model",
    "model_to_pixels",
    "data_path",
]

DENOISER_FILE = "digits_denoiser.safetensors"
CLASSIFIER_FILE = "digits_classifier.safetensors"
GAUSSIAN_FILE = "digits_gaussian.npz"
CLASS_GAUSSIANS_FILE = "digits_class_gaussians.npz"
TEST_SET_FILE = "digits_test.npz"
RECIPE_FILE = "digits_recipe.json"

DENOISER_FORMAT = "gaussport.digits_denoiser"
CLASSIFIER_FORMAT = "gaussport.digits_classifier"
TEST_SET_FORMAT = "gaussport.digits_test_set"
FORMAT_VERSION = 1

PIXEL_MAX = 16  # sklearn's digits have integer pixel values 0..16


def pixels_to_model(pixels: Tensor | np.ndarray) -> Tensor:
    """Pixel values 0..16 to model space ``x = pixels / 8 - 1`` in [-1, 1], float32, shape kept."""
    p = torch.as_tensor(np.asarray(pixels) if isinstance(pixels, np.ndarray) else pixels)
    return p.to(torch.float32) * (2.0 / PIXEL_MAX) - 1.0


def model_to_pixels(x: Tensor) -> Tensor:
    """Model space back to pixel values ``(x + 1) * 8``, clamped to [0, 16] (float, not rounded)."""
    return ((x + 1.0) * (PIXEL_MAX / 2.0)).clamp(0.0, PIXEL_MAX)


@contextmanager
def data_path(name: str, directory: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A filesystem path to the shipped data file ``name`` (or to ``directory / name`` if given)."""
    if directory is not None:
        yield Path(directory) / name
        return
    resource = importlib.resources.files("gaussport").joinpath("data", name)
    with importlib.resources.as_file(resource) as path:
        if not path.is_file():
            raise FileNotFoundError(
                f"gaussport's package data file {name!r} is missing; reinstall gaussport or regenerate it "
                "with `python benchmarks/train_demo.py --out src/gaussport/data`."
            )
        yield path


# ---------------------------------------------------------------------- networks (safetensors)
def save_network(
    module: nn.Module, path: str | os.PathLike[str], fmt: str, extra: dict | None = None
) -> None:
    """Write ``module``'s state dict as float32 safetensors, with its ``config`` in the metadata."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    metadata = {
        "gaussport_format": fmt,
        "version": str(FORMAT_VERSION),
        "config": json.dumps(module.config),
        "extra": json.dumps(extra or {}),
        "sha256": _digest(state),
    }
    payload = save(state, metadata=metadata)  # serialised in memory first: nothing half-written
    with atomic_writer(path) as f:
        f.write(payload)


def _digest(state: dict[str, Tensor]) -> str:
    """A SHA-256 of the weights (names, shapes, dtypes, bytes): safetensors has no checksum of its own."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype}:".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _read_network(path: Path, fmt: str) -> tuple[dict[str, Tensor], dict, dict]:
    from safetensors import safe_open

    not_ours = (
        f"{os.fspath(path)!r} is not a gaussport {fmt.split('.')[-1].replace('_', ' ')} file "
        "(expected safetensors written by gaussport.digits.train)."
    )
    if not path.is_file():
        raise FileNotFoundError(f"{os.fspath(path)!r} does not exist; check the directory.")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - a damaged header fails in many ways; all are "not ours"
        raise ValueError(not_ours) from exc
    if metadata.get("gaussport_format") != fmt:
        raise ValueError(not_ours)
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - every damage is one error
        raise ValueError(f"{os.fspath(path)!r} is damaged ({type(exc).__name__}: {exc}); {_RETRAIN}") from exc
    # Files written before the checksum was added (by gaussport 0.1) have none: they still load.
    if "sha256" in metadata and metadata["sha256"] != _digest(state):
        raise ValueError(
            f"{os.fspath(path)!r} is damaged: its weights do not match the checksum they were saved with; "
            f"{_RETRAIN}"
        )
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{os.fspath(path)!r} is damaged: the weights {key!r} contain NaN or inf; {_RETRAIN}"
            )
    try:
        if int(metadata["version"]) > FORMAT_VERSION:
            raise ValueError(
                f"{os.fspath(path)!r} has format version {metadata['version']}; upgrade gaussport."
            )
        config = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} has damaged metadata: {exc}") from exc
    return state, config, extra


_RETRAIN = "write it again with `gaussport train-demo --out DIR` (or reinstall gaussport for the shipped one)"


def _build(cls: type[nn.Module], config: dict, path: Path) -> nn.Module:
    """``cls(**config)``; a config that does not fit is a damaged file."""
    try:
        return cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{os.fspath(path)!r} has a damaged network config ({exc}); {_RETRAIN}") from exc


def _finish(
    module: nn.Module,
    state: dict[str, Tensor],
    device: torch.device | str | None,
    dtype: torch.dtype,
    path: Path,
) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or misshapen weights
        raise ValueError(f"{os.fspath(path)!r} does not hold the weights its config needs: {exc}") from exc
    module.to(device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def load_digits_denoiser(
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> DigitsUNet:
    """The shipped EDM-preconditioned digits denoiser (EMA weights), in eval mode, no gradients.

    ``net(x, sigma)`` is the unconditional denoiser (a :class:`gaussport.Denoiser`);
    ``net(x, sigma, class_labels)`` the class-conditional one (integer labels ``[B]`` or EDM one-hot
    rows). It also has EDM's ``EDMPrecond`` interface (see :class:`~gaussport.digits.unet.DigitsUNet`).

    Args:
        device: where to put the weights (CPU if ``None``).
        dtype: weight dtype; ``torch.float64`` for float64 reference solves.
        directory: read ``digits_denoiser.safetensors`` from here instead of the package data.

    Raises:
        ValueError: if the file is not a gaussport digits-denoiser file.
    """
    with data_path(DENOISER_FILE, directory) as path:
        state, config, _ = _read_network(path, DENOISER_FORMAT)
        net = _build(DigitsUNet, config, path)
        return _finish(net, state, device, dtype, path)  # type: ignore[return-value]


def load_digits_classifier(
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    directory: str | os.PathLike[str] | None = None,
) -> DigitsClassifier:
    """The shipped digits classifier (eval mode); ``.features(x)`` feeds the Frechet distance.

    Raises:
        ValueError: if the file is not a gaussport digits-classifier file.
    """
    with data_path(CLASSIFIER_FILE, directory) as path:
        state, config, _ = _read_network(path, CLASSIFIER_FORMAT)
        clf = _build(DigitsClassifier, config, path)
        return _finish(clf, state, device, dtype, path)  # type: ignore[return-value]


# ---------------------------------------------------------------------- statistics (npz)
def load_digits_gaussian(*, directory: str | os.PathLike[str] | None = None) -> Gaussian:
    """The Gaussian ``N(mu, Sigma)`` fitted (float64, dense, ``N - 1``) to the training split in [-1, 1].

    Sample shape ``(1, 8, 8)``. It is the warm start for the shipped denoiser:
    ``gaussport.sample(net, x, sigmas, warm_start=load_digits_gaussian(), sigma_skip=...)``.
    """
    with data_path(GAUSSIAN_FILE, directory) as path:
        return Gaussian.load(path)


def load_digits_recipe(*, directory: str | os.PathLike[str] | None = None) -> Recipe:
    """The tuned sampling recipe of the digits model (teleport level and grid per solver and NFE).

    The shipped one was made by ``gaussport tune`` on seeds 10000.. (tuning) and 20000.. (validation),
    apart from the seeds results are reported on; its provenance says how (docs/recipes.md). With
    ``directory``, the ``digits_recipe.json`` there (``gaussport tune --model DIR --out
    DIR/digits_recipe.json`` writes one). Use it with ``gaussport.sample(..., recipe=...)`` or
    ``gaussport demo``, which uses it by default.

    Raises:
        FileNotFoundError: ``directory`` holds no recipe.
        ValueError: the file is not a valid recipe (:meth:`gaussport.tuning.Recipe.load`).
    """
    with data_path(RECIPE_FILE, directory) as path:
        if directory is not None and not path.is_file():
            raise FileNotFoundError(
                f"{os.fspath(directory)!r} holds no {RECIPE_FILE}; make one with `gaussport tune --model "
                f"{os.fspath(directory)} --out {os.fspath(path)}`."
            )
        return Recipe.load(path)


def load_digits_class_gaussians(*, directory: str | os.PathLike[str] | None = None) -> GaussianMixture:
    """The class-conditional Gaussians of the training split as a :class:`GaussianMixture`.

    Component ``k`` is the Gaussian fitted to the training images of digit ``k`` (k = 0..9) and its
    weight is the class frequency in the training split; ``mixture.components[k]`` is the class-``k``
    warm start.
    """
    with data_path(CLASS_GAUSSIANS_FILE, directory) as path:
        return GaussianMixture.load(path)


@dataclass(frozen=True)
class DigitsTestSet:
    """The held-out test split (never used for training or for the Gaussian fits).

    Attributes:
        pixels: ``[N, 8, 8]`` uint8 pixel values 0..16 (as distributed by scikit-learn).
        labels: ``[N]`` int64 digit labels.
        indices: ``[N]`` int64 positions of these images in ``sklearn.datasets.load_digits()``.
        metadata: provenance (seed, split rule, data source and licence).
    """

    pixels: Tensor
    labels: Tensor
    indices: Tensor
    metadata: dict

    @property
    def images(self) -> Tensor:
        """The images in model space, ``[N, 1, 8, 8]`` float32 in [-1, 1]."""
        return pixels_to_model(self.pixels).unsqueeze(1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def save_test_set(
    path: str | os.PathLike[str], pixels: np.ndarray, labels: np.ndarray, indices: np.ndarray, metadata: dict
) -> None:
    """Write the test split as an ``.npz`` (uint8 pixels, int64 labels and indices, JSON metadata)."""
    arrays = {
        "pixels": np.asarray(pixels, dtype=np.uint8),
        "labels": np.asarray(labels, dtype=np.int64),
        "indices": np.asarray(indices, dtype=np.int64),
    }
    write_npz(path, TEST_SET_FORMAT, FORMAT_VERSION, metadata, arrays)


def load_digits_test_set(*, directory: str | os.PathLike[str] | None = None) -> DigitsTestSet:
    """The held-out test split of the digits (the reference set of the Frechet distance).

    Raises:
        ValueError: if the file is not a gaussport digits test-set file.
    """
    with data_path(TEST_SET_FILE, directory) as path:
        metadata, arrays = read_npz(
            path,
            TEST_SET_FORMAT,
            FORMAT_VERSION,
            what="digits test-set",
            arrays={
                "pixels": Array(kinds="u", ndim=3),
                "labels": Array(kinds="iu", ndim=1, nonnegative=True),
                "indices": Array(kinds="iu", ndim=1, nonnegative=True),
            },
        )
    pixels, labels, indices = arrays["pixels"], arrays["labels"], arrays["indices"]
    n = pixels.shape[0]
    if (
        pixels.dtype != np.uint8
        or labels.shape != (n,)
        or indices.shape != (n,)
        or int(pixels.max(initial=0)) > PIXEL_MAX
        or int(labels.max(initial=0)) > 9
    ):
        raise ValueError(
            f"{os.fspath(path)!r} is inconsistent: pixels {pixels.shape} {pixels.dtype} "
            f"(values 0..{PIXEL_MAX} expected), labels {labels.shape}, indices {indices.shape}."
        )
    return DigitsTestSet(
        torch.from_numpy(pixels), torch.from_numpy(labels).long(), torch.from_numpy(indices).long(), metadata
    )
