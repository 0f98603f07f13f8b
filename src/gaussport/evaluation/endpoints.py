"""The harness's store of exact ODE endpoints: per seed in memory, optionally in one ``.npz`` on disk.

An exact endpoint (a float64 RK4 reference solve) costs far more than the solver runs it is
compared with, so :class:`~gaussport.evaluation.Evaluator` computes each seed's once and keeps it
here. On disk the file name carries the first 16 characters of the model's fingerprint (a SHA-256
of its state dict, :func:`fingerprint`), the sigma range, the RK4 steps and the model dtype; the
file stores the full fingerprint and is ignored (with a warning) when it is another model's. Files
are read with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_writer
from ..tuning.probes import fingerprint_model

__all__ = ["CACHE_FORMAT", "EndpointStore", "fingerprint"]

logger = logging.getLogger("gaussport")

CACHE_FORMAT = "gaussport.reference_endpoints"


def fingerprint(module: Any) -> str | None:
    """A SHA-256 of a module's state dict (names, shapes, dtypes, values), or ``None`` without one.

    The one rule of the package (:func:`gaussport.tuning.probes.fingerprint_model`): endpoint caches,
    probe records and recipes name a model the same way.
    """
    return fingerprint_model(module)


class EndpointStore:
    """Exact endpoints by seed (float64, CPU); with ``path`` also kept in that ``.npz`` file.

    Args:
        shape: the sample shape (a file holding another shape is ignored).
        path: the cache file, or ``None`` for memory only.
        model: the fingerprint of the model the endpoints belong to (required with ``path``).
    """

    def __init__(self, shape: Sequence[int], path: Path | None = None, model: str | None = None) -> None:
        if path is not None and model is None:
            raise ValueError("a disk cache of endpoints needs the model's fingerprint.")
        self.shape = tuple(int(s) for s in shape)
        self.path = path
        self.model = model
        self._endpoints: dict[int, Tensor] = {}
        self._load()

    def __contains__(self, seed: int) -> bool:
        return seed in self._endpoints

    def get(self, seeds: Sequence[int]) -> Tensor:
        """The endpoints of ``seeds``, stacked ``[len(seeds), *shape]``."""
        return torch.stack([self._endpoints[s] for s in seeds])

    def put(self, seeds: Sequence[int], endpoints: Tensor) -> None:
        """Store the endpoints ``[len(seeds), *shape]`` of ``seeds`` (and rewrite the file)."""
        for s, e in zip(seeds, endpoints.to("cpu", torch.float64), strict=True):
            self._endpoints[int(s)] = e
        self._save()

    def _load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["gaussport_format"]) != CACHE_FORMAT or str(data["fingerprint"]) != self.model:
                    raise ValueError("not a cache of this model")
                seeds, endpoints = data["seeds"], data["endpoints"]
            if seeds.dtype.kind not in "iu" or seeds.ndim != 1 or endpoints.shape[:1] != seeds.shape:
                raise ValueError("seeds and endpoints do not match")
            if endpoints.dtype.kind != "f" or not bool(np.isfinite(endpoints).all()):
                raise ValueError("the endpoints are not finite floating-point values")
        except Exception as exc:  # noqa: BLE001 - a damaged cache (any failure) is recomputed, never used
            logger.warning("ignoring the endpoint cache %s (%s)", self.path, exc)
            return
        if endpoints.shape[1:] != self.shape:
            logger.warning("ignoring the endpoint cache %s (sample shape %s)", self.path, endpoints.shape[1:])
            return
        for s, e in zip(seeds.tolist(), endpoints, strict=True):
            self._endpoints[int(s)] = torch.from_numpy(np.array(e, dtype=np.float64))
        logger.info("loaded %d exact endpoints from %s", len(seeds), self.path)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seeds = sorted(self._endpoints)
        with atomic_writer(self.path) as f:
            np.savez(
                f,
                gaussport_format=np.array(CACHE_FORMAT),
                fingerprint=np.array(self.model),
                seeds=np.array(seeds, dtype=np.int64),
                endpoints=torch.stack([self._endpoints[s] for s in seeds]).numpy(),
            )
