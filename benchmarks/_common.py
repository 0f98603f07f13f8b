"""Pieces the benchmark scripts share (run them as ``python benchmarks/<script>.py``: this folder is
then on ``sys.path``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def endpoint_cache_dir() -> Path:
    """Where the digits benchmarks keep the exact ODE endpoints between runs (XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gaussport" / "digits-endpoints"


def k_diffusion_sampler(fn_name: str, **kwargs: Any) -> Callable[..., torch.Tensor] | None:
    """``sampler(denoiser, x, grid)`` running k-diffusion's ``fn_name``; ``None`` if not installed.

    With ``eta`` given (ancestral samplers at ``eta = 0``) the noise sampler returns zeros, so the
    deterministic path never draws; the global RNG is forked because some samplers touch it anyway.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import k_diffusion.sampling as ks
    except ImportError:
        return None
    fn = getattr(ks, fn_name)

    def run(denoiser: Callable[..., torch.Tensor], x: torch.Tensor, grid: tuple[float, ...]) -> torch.Tensor:
        extra = dict(kwargs)
        if "eta" in extra:
            extra["noise_sampler"] = lambda s, t: torch.zeros_like(x)
        with torch.random.fork_rng():
            sigmas = torch.tensor(grid, dtype=x.dtype, device=x.device)
            return fn(denoiser, x.clone(), sigmas, disable=True, **extra)

    return run


def bootstrap_resamples(n: int, count: int = 2000, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` paired bootstrap resamples of ``n`` seeds: index arrays drawn with replacement
    (numpy PCG64 with ``seed``), the same for every statistic computed from one call."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, n, n)
