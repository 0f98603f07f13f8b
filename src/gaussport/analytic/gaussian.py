"""The Gaussian data model: an exact denoiser and the closed-form probability-flow map.

For data ``x0 ~ N(mu, Sigma)`` with ``Sigma = U diag(lam) U^T``, the noisy marginal at level sigma
is ``N(mu, Sigma + sigma^2 I)`` and (Wang & Vastola 2024; docs/warm-start.md#the-closed-form-flow):

* denoiser ``D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``
  (per direction: shrink by ``lam / (lam + sigma^2)``);
* PF-ODE flow from ``s0`` to ``s1``:
  ``x(s1) = mu + (Sigma + s1^2 I)^(1/2) (Sigma + s0^2 I)^(-1/2) (x(s0) - mu)``
  (per direction: scale by ``sqrt((lam + s1^2) / (lam + s0^2))``; zero-variance directions by
  ``s1 / s0``). It transports ``N(mu, Sigma + s0^2 I)`` exactly onto ``N(mu, Sigma + s1^2 I)``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import as_int
from .._files import Array, read_npz, read_safetensors, write_npz, write_safetensors
from .covariance import (
    Covariance,
    Dense,
    Diagonal,
    LowRankPlusIsotropic,
    covariance_arrays,
    covariance_from_arrays,
    factor_dtype,
)
from .moments import MomentAccumulator, dense_fits_in_memory, resolve_device
from .sketch import sketch_low_rank

__all__ = ["Gaussian", "MomentAccumulator", "fit_low_rank"]

FORMAT = "gaussport.gaussian"
FORMAT_VERSION = 1
_REPRESENTATIONS = ("auto", "dense", "diagonal", "lowrank")
# The rank representation="auto" keeps when a dense fit would not fit in memory.
AUTO_RANK = 256
logger = logging.getLogger("gaussport")
# The streaming low-rank fit (gaussport.analytic.sketch builds Gaussians, so this module cannot
# import it without an import cycle): the package's __init__ installs it here.


def _as_cpu64(t: Any, what: str) -> Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a tensor; got {type(t).__name__}.")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{what} must be a real tensor; got dtype {t.dtype}.")
    # Always a copy: the value must not change when the caller's tensor does (docs/conventions.md).
    t = t.detach().to("cpu", torch.float64, copy=True)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values.")
    return t


def _batches(
    data: Any, batch_size: int
) -> tuple[Callable[[], Iterator[Any]] | None, Iterator[Any], int | None, int | None]:
    """``(passes, stream, N, d)`` for :meth:`Gaussian.fit`'s ``data``.

    ``passes`` returns a fresh iterator per call (``None`` for a one-shot iterator), ``stream`` is
    the iterator of the first pass; ``N`` and ``d`` are known up front for a tensor only.
    """
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, Tensor):
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(
                f"data must have shape [N, *sample_shape] with N >= 1; got {tuple(data.shape)} (one "
                "sample x is x.unsqueeze(0))."
            )
        tensor = data

        def split() -> Iterator[Tensor]:
            return iter(tensor.split(batch_size))

        return split, split(), tensor.shape[0], math.prod(tensor.shape[1:])
    if isinstance(data, (str, bytes)) or not (isinstance(data, Iterable) or callable(data)):
        raise TypeError(
            "data must be a tensor [N, *sample_shape], an iterable of such batches or a callable "
            f"returning one; got {type(data).__name__}."
        )
    if isinstance(data, Iterator):
        return None, data, None, None
    source = data if callable(data) and not isinstance(data, Iterable) else None

    def fresh() -> Iterator[Any]:
        items = source() if source is not None else data
        try:
            return iter(items)
        except TypeError:
            raise TypeError(
                f"the data callable must return an iterable of batches; got {type(items).__name__}."
            ) from None

    return fresh, fresh(), None, None


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a string or None; got {type(value).__name__}.")
    return value


class Gaussian:
    """A Gaussian data model ``N(mu, Sigma)``: an exact denoiser and an exact PF-ODE flow map.

    Args:
        mean: the mean, a tensor of the sample shape (e.g. ``[C, H, W]``); flattened internally.
        cov: a dense ``[d, d]`` covariance matrix, or a :class:`~gaussport.analytic.Covariance`
            (:class:`Dense`, :class:`Diagonal`, :class:`LowRankPlusIsotropic`).
        n_samples: number of samples the statistics were estimated from (metadata).
        scale: a description of the data units, e.g. ``"[-1, 1]"`` (metadata; see :meth:`affine`).
        source: free-form provenance (metadata).

    The object is immutable: the tensors given are copied (a caller changing them later changes
    nothing), :attr:`mean` returns a copy, and integral NumPy or 0-d tensor ``n_samples`` become a
    Python ``int`` (other values are refused with a TypeError, so :meth:`save` cannot fail on them).
    It is a :class:`~gaussport.Denoiser` and a :class:`~gaussport.FlowMap`.
    """

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor | Covariance,
        *,
        n_samples: int | None = None,
        scale: str | None = None,
        source: str | None = None,
    ) -> None:
        mean64 = _as_cpu64(mean, "mean")
        if mean64.ndim == 0:
            raise ValueError("mean must have the sample shape (at least 1-D).")
        if isinstance(cov, Covariance):
            covariance = cov
        else:
            c = _as_cpu64(cov, "cov")
            if c.ndim == 1:
                raise ValueError(
                    "cov is 1-D; for a diagonal covariance pass gaussport.analytic.Diagonal(variances) "
                    "(Gaussian(mean, cov) takes a dense [d, d] matrix)."
                )
            covariance = Dense.from_matrix(c)
        if covariance.dim != mean64.numel():
            raise ValueError(
                f"the covariance is {covariance.dim}-dimensional but the mean has {mean64.numel()} "
                f"entries (shape {tuple(mean64.shape)})."
            )
        self._shape = tuple(mean64.shape)
        self._mean = mean64.reshape(-1)
        self._cov = covariance
        # Metadata is saved as JSON: integral NumPy/tensor counts become ints here, others are refused.
        self.n_samples = as_int(n_samples, "n_samples", minimum=1, allow_none=True)
        self.scale = _optional_text(scale, "scale")
        self.source = _optional_text(source, "source")
        self._mean_copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def diagonal(cls, mean: Tensor, variances: Tensor, **metadata: Any) -> Gaussian:
        """A Gaussian with independent coordinates (``variances`` of the sample shape or flat).

        ``metadata`` are the keywords ``n_samples``, ``scale`` and ``source`` of the constructor.
        """
        unknown = sorted(set(metadata) - {"n_samples", "scale", "source"})
        if unknown:
            raise TypeError(
                f"Gaussian.diagonal got unknown keyword(s) {unknown}; it takes n_samples, scale, source."
            )
        return cls(mean, Diagonal(_as_cpu64(variances, "variances").reshape(-1)), **metadata)

    @classmethod
    def low_rank(
        cls, mean: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, residual: float = 0.0, **metadata: Any
    ) -> Gaussian:
        """Top-``r`` eigenpairs (``eigenvectors`` of shape ``[d, r]``) plus a residual variance."""
        return cls(mean, LowRankPlusIsotropic(eigenvalues, eigenvectors, residual), **metadata)

    @classmethod
    def fit(
        cls,
        data: Tensor | np.ndarray | Iterable[Tensor] | Callable[[], Iterable[Tensor]],
        *,
        representation: str = "auto",
        rank: int | None = None,
        batch_size: int = 4096,
        scale: str | None = None,
        source: str | None = None,
        device: torch.device | str | None = None,
        accumulate_dtype: torch.dtype | None = None,
        distributed: bool = False,
        disable: bool | None = None,
    ) -> Gaussian:
        """Fit mean and covariance to samples, in float64, centred (never raw moments), streamed.

        Order: one pass over the data, ``O(N d^2)`` for the scatter (a symmetric rank-k update, the
        flops of ``numpy.cov``) plus ``O(d^3)`` for the eigendecomposition; peak memory 3 ``d x d``
        float64 matrices plus one batch for ``"dense"`` (:mod:`gaussport.analytic.moments`), ``O(d)``
        for ``"diagonal"``. Measured speed and memory: docs/benchmarks.md.

        Args:
            data: a tensor or NumPy array ``[N, *sample_shape]`` (split into ``batch_size`` rows),
                an iterable of such batches (a list, a ``DataLoader``, a generator: streamed once),
                or a zero-argument callable returning a fresh iterable of batches (needed by the
                multi-pass ``"lowrank"`` fit when the data are not a tensor or a sequence).
            representation: ``"auto"`` (default: ``"dense"`` when 3 ``d x d`` float64 matrices take
                at most half the free memory of ``device``, e.g. d <= ~16,000 with 24 GB free,
                else ``"lowrank"`` with ``rank = min(d, 256)``), ``"dense"``, ``"diagonal"`` or
                ``"lowrank"`` (needs ``rank``; the residual is the mean discarded eigenvalue,
                keeping the trace; streamed without ``d x d`` when the data can be read again).
            rank: number of eigenpairs kept by ``"lowrank"``.
            batch_size: chunk size when ``data`` is one tensor or array.
            scale: the data units, stored as metadata (e.g. ``"[-1, 1]"``).
            source: provenance, stored as metadata.
            device: where the accumulation and the eigendecomposition run (``"cuda"``: a GPU
                ``eigh`` takes seconds where a CPU takes minutes); the result lives on the CPU.
            accumulate_dtype: ``None``/``torch.float64`` (default) or ``torch.float32``: each
                batch's centred scatter in float32, merged in float64 (faster on GPUs).
            distributed: merge the statistics of every process of the default ``torch.distributed``
                group (each process passes its shard of the data; launched with ``torchrun``): every
                rank returns the Gaussian of all the data, equal to one process's fit up to float64
                rounding. ``"dense"`` and ``"diagonal"`` only (``"auto"`` means ``"dense"`` here).
            disable: disables the progress bar (samples/s; ``None``: only on a terminal, as tqdm does).

        The covariance is divided by ``N - 1``.

        Raises:
            TypeError: ``rank`` or ``batch_size`` is not an integer (a bool is not), ``scale`` or
                ``source`` is not a string, ``data`` is neither a tensor nor an iterable of them nor
                a callable, ``device``, ``accumulate_dtype``, ``distributed`` or ``disable`` of the
                wrong type.
            ValueError: ``batch_size < 1``, an unknown ``representation``, ``rank`` missing for
                (or given without) ``"lowrank"`` or outside ``[0, d]``, ``distributed`` without a
                process group, or data that cannot be fitted.
        """
        if not isinstance(representation, str) or representation not in _REPRESENTATIONS:
            raise ValueError(f"representation must be one of {_REPRESENTATIONS}; got {representation!r}.")
        rank = as_int(rank, "rank", minimum=0, allow_none=True)
        if representation == "lowrank" and rank is None:
            raise ValueError("representation='lowrank' needs rank=, the number of eigenpairs to keep.")
        if representation != "lowrank" and rank is not None:
            raise ValueError(
                f"rank={rank} only applies to representation='lowrank'; "
                f"got representation={representation!r}."
            )
        batch_size = as_int(batch_size, "batch_size", minimum=1)
        assert batch_size is not None
        _optional_text(scale, "scale")
        _optional_text(source, "source")
        dev = resolve_device(device)
        if not isinstance(distributed, bool):
            raise TypeError(f"distributed must be True or False; got {type(distributed).__name__}.")
        if disable is not None and not isinstance(disable, bool):
            raise TypeError(f"disable must be True, False or None; got {type(disable).__name__}.")
        if distributed and representation == "lowrank":
            raise ValueError("distributed=True fits 'dense' or 'diagonal'; fit 'lowrank' in one process.")
        # Checked here so a bad value fails before any data is read.
        MomentAccumulator(device=dev, accumulate_dtype=accumulate_dtype)

        passes, stream, total, dim = _batches(data, batch_size)
        kind = representation
        if kind in ("auto", "lowrank") and dim is None:
            first = next(stream, None)
            if first is None:
                raise ValueError("no data to fit.")
            if isinstance(first, Tensor) and first.ndim >= 2:
                dim = math.prod(first.shape[1:])
            stream = itertools.chain([first], stream)
        if kind == "auto":
            kind = "dense" if distributed or dim is None or dense_fits_in_memory(dim, dev) else "lowrank"
            rank = min(dim, AUTO_RANK) if kind == "lowrank" and dim is not None else None
            logger.info("Gaussian.fit: representation='auto' chose %r for d = %s", kind, dim)
        if kind == "lowrank":
            assert rank is not None
            if dim is not None and rank > dim:
                raise ValueError(f"rank must be in [0, d] = [0, {dim}]; got {rank}.")
            if passes is not None and rank >= 1:
                return fit_low_rank(
                    passes,
                    rank=rank,
                    device=dev,
                    dtype=accumulate_dtype or torch.float64,
                    generator=torch.Generator().manual_seed(0),
                    disable=disable,
                    scale=scale,
                    source=source,
                )
            if passes is None and representation == "auto":
                raise ValueError(
                    f"a dense fit of d = {dim} would not fit in memory and the low-rank fit reads the data "
                    "several times: pass a tensor, a sequence or a callable returning a fresh iterable "
                    "of batches, or choose representation= explicitly."
                )

        acc = MomentAccumulator(
            full=kind == "dense" or (kind == "lowrank" and rank != 0),
            device=dev,
            accumulate_dtype=accumulate_dtype,
        )
        with tqdm(total=total, disable=disable, desc="Gaussian.fit", unit="sample", unit_scale=True) as bar:
            for batch in stream:
                acc.update(batch)
                bar.update(batch.shape[0])
        if distributed:
            acc.all_reduce()
        if acc.mean is None or acc.shape is None:
            raise ValueError("no data to fit.")
        mean = acc.mean.to("cpu", torch.float64).reshape(acc.shape)
        meta = {"n_samples": acc.count, "scale": scale, "source": source}
        if not acc.full:
            variances = acc.variances()
            if kind == "diagonal":
                return cls(mean, Diagonal(variances), **meta)
            empty = torch.empty(variances.shape[0], 0, dtype=torch.float64)
            return cls(mean, LowRankPlusIsotropic(empty[0], empty, float(variances.mean())), **meta)
        # The eigenvectors overwrite the accumulator's buffer; Dense keeps its own CPU copy and the
        # buffer is freed when this frame drops it (peak 3 d x d: docs/benchmarks.md).
        eigenvalues, eigenvectors = acc.eigh()
        del acc
        dense = Dense(eigenvalues, eigenvectors)
        del eigenvalues, eigenvectors
        if kind == "lowrank":
            assert rank is not None
            return cls(mean, LowRankPlusIsotropic.from_dense(dense, rank), **meta)
        return cls(mean, dense, **meta)

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        """The sample shape."""
        return self._shape

    @property
    def dim(self) -> int:
        return self._mean.numel()

    @property
    def mean(self) -> Tensor:
        """The mean in the sample shape (float64, CPU); a copy, so the Gaussian stays immutable."""
        return self._mean.reshape(self._shape).clone()

    @property
    def cov(self) -> Covariance:
        return self._cov

    @property
    def representation(self) -> str:
        return self._cov.kind

    def __repr__(self) -> str:
        return (
            f"Gaussian(shape={self._shape}, representation={self.representation!r}, "
            f"n_samples={self.n_samples}, scale={self.scale!r})"
        )

    # ----------------------------------------------------------------- helpers
    def _flat(self, x: Tensor, what: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"{what} must be a floating-point tensor; got {getattr(x, 'dtype', type(x).__name__)}."
            )
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"{what} has sample shape {tuple(x.shape[1:])} but the Gaussian was fitted to samples of "
                f"shape {self._shape}; pass x of shape [B, {', '.join(map(str, self._shape))}]."
            )
        work = torch.promote_types(x.dtype, torch.float32)
        return x.reshape(x.shape[0], self.dim).to(work)  # not -1: ambiguous for a batch of 0

    def _mean_like(self, v: Tensor) -> Tensor:
        key = (v.device, v.dtype)
        if key not in self._mean_copies:
            self._mean_copies[key] = self._mean.to(device=v.device, dtype=v.dtype)
        return self._mean_copies[key]

    def _sigma2(self, sigma: Tensor | float, batch: int, like: Tensor) -> Tensor:
        # Python floats go straight to float64 (as_tensor alone would round them to float32 first).
        s = torch.as_tensor(sigma, dtype=factor_dtype(like.device), device=like.device)
        if s.ndim == 0:
            s = s.expand(batch)
        if s.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have shape [{batch}]; got {tuple(s.shape)}.")
        return (s * s).unsqueeze(-1)  # [B, 1], broadcast against eigenvalues [k]

    # ----------------------------------------------------------------- the model
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The exact denoiser ``E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        # lam / (lam + s2) is 0/0 for a zero-variance direction at sigma = 0: the projection gives 0.
        out = mu + self._cov.apply(v - mu, lambda lam: torch.nan_to_num(lam / (lam + s2), nan=0.0))
        return out.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x) = -(Sigma + sigma^2 I)^-1 (x - mu)``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        out = -self._cov.apply(v - mu, lambda lam: 1.0 / (lam + s2))
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log N(x; mu, Sigma + sigma^2 I)`` per sample, shape ``[B]``."""
        v = self._flat(x)
        mu = self._mean_like(v)
        s2 = self._sigma2(sigma, v.shape[0], v)
        diff = v - mu
        maha = (diff * self._cov.apply(diff, lambda lam: 1.0 / (lam + s2))).sum(-1)
        logdet = self._cov.logdet(s2.squeeze(-1)).to(maha.dtype)
        return -0.5 * (self.dim * math.log(2 * math.pi) + logdet + maha)

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """The exact PF-ODE map from ``sigma_from`` to ``sigma_to`` (either direction; 0 evaluations).

        ``x(s1) = mu + sqrt((Sigma + s1^2) / (Sigma + s0^2)) (x(s0) - mu)`` in the eigenbasis;
        zero-variance directions scale by ``s1 / s0`` (docs/warm-start.md#rank-deficient-covariances).

        Raises:
            ValueError: for negative sigmas, or ``sigma_from = 0 < sigma_to`` with a rank-deficient
                covariance (the map from sigma = 0 is not invertible there).
        """
        s0, s1 = float(sigma_from), float(sigma_to)
        if not (math.isfinite(s0) and math.isfinite(s1)) or s0 < 0 or s1 < 0:
            raise ValueError(f"flow needs finite noise levels >= 0; got sigma_from={s0}, sigma_to={s1}.")
        v = self._flat(x)
        if s0 == s1:
            return x.clone()
        if s0 == 0.0 and float(self._cov.spectrum()[-1]) == 0.0:
            raise ValueError(
                "cannot flow from sigma = 0 with a rank-deficient covariance: zero-variance directions "
                "carry no information at sigma = 0 (the map is not invertible)."
            )
        mu = self._mean_like(v)
        out = mu + self._cov.apply(v - mu, lambda lam: torch.sqrt((lam + s1 * s1) / (lam + s0 * s0)))
        return out.reshape(x.shape).to(x.dtype)

    def from_noise(self, z: Tensor, sigma: float) -> Tensor:
        """The teleport from pure noise: ``mu + (Sigma + sigma^2 I)^(1/2) z`` (VE state at ``sigma``).

        The limit of :meth:`flow` from a level ``s -> inf`` with ``x(s) = s z``: the state the
        probability-flow trajectory of the noise ``z`` reaches at ``sigma``. Rectified-flow models
        start at ``t = 1`` with ``x = z`` exactly (docs/warm-start.md#teleporting-from-pure-noise).

        Raises:
            ValueError: for a negative or non-finite ``sigma``, or ``z`` of the wrong sample shape.
        """
        s = float(sigma)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"the teleport target must be a finite noise level >= 0; got {sigma}.")
        v = self._flat(z, "the noise")
        out = self._mean_like(v) + self._cov.apply(v, lambda lam: torch.sqrt(lam + s * s))
        return out.reshape(z.shape).to(z.dtype)

    def sample(
        self,
        n: int,
        sigma: float = 0.0,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``n`` exact samples of the noisy marginal ``N(mu, Sigma + sigma^2 I)``, shape ``[n, *shape]``.

        Randomness comes only from ``generator`` (the global RNG if ``None``); samples are drawn on
        the generator's device unless ``device`` is given.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer; got {n!r}.")
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be finite and >= 0; got {sigma}.")
        if device is None:
            device = generator.device if generator is not None else "cpu"
        work = torch.promote_types(dtype, torch.float32)
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=work)
        out = self._mean_like(z) + self._cov.apply(z, lambda lam: torch.sqrt(lam + sigma * sigma))
        return out.reshape((n, *self._shape)).to(dtype)

    # ----------------------------------------------------------------- transformations
    def affine(self, scale: float, shift: float | Tensor = 0.0, *, units: str | None = None) -> Gaussian:
        """The law of ``scale * x + shift``: e.g. ``affine(2, -1, units="[-1, 1]")`` maps [0, 1] data.

        Eigenvectors are unchanged and eigenvalues scale by ``scale^2``: one explicit conversion instead
        of ``*2-1`` / ``*4`` at every call site (docs/warm-start.md#units).
        """
        a = float(scale)
        shift_t = torch.as_tensor(shift, dtype=torch.float64)
        mean = self.mean * a + shift_t
        cov = self._cov
        if isinstance(cov, Dense):
            new: Covariance = Dense(cov.eigenvalues * a * a, cov.eigenvectors)
        elif isinstance(cov, Diagonal):
            new = Diagonal(cov.variances * a * a)
        elif isinstance(cov, LowRankPlusIsotropic):
            new = LowRankPlusIsotropic(cov.eigenvalues * a * a, cov.eigenvectors, cov.residual * a * a)
        else:
            raise TypeError(f"affine does not support {type(cov).__name__}.")
        return Gaussian(mean, new, n_samples=self.n_samples, scale=units, source=self.source)

    def to_low_rank(self, rank: int) -> Gaussian:
        """The top-``rank`` eigenpairs plus the mean discarded eigenvalue as residual (from dense).

        Raises:
            TypeError: ``rank`` is not an integer, or the covariance is not dense.
            ValueError: ``rank`` is outside ``[0, d]``.
        """
        rank = as_int(rank, "rank", minimum=0)
        if not isinstance(self._cov, Dense):
            raise TypeError("to_low_rank needs a dense covariance.")
        return Gaussian(
            self.mean,
            LowRankPlusIsotropic.from_dense(self._cov, rank),
            n_samples=self.n_samples,
            scale=self.scale,
            source=self.source,
        )

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics with their metadata; no pickling, an atomic write.

        A path ending in ``.safetensors`` gets a safetensors file (the format ``gaussport fit``
        writes), any other an ``.npz`` archive. Both hold the same float64 arrays (the mean and
        the covariance's :meth:`~gaussport.analytic.Covariance.arrays`) and the same JSON metadata:
        format version, data shape, representation, rank (the number of stored eigenpairs; ``d``
        for dense, ``null`` for diagonal), ``n_samples``, value scale, source and the
        normalisation ``n-1`` (docs/conventions.md#files).

        Raises:
            TypeError: metadata set after construction that JSON cannot encode.
            FileNotFoundError: the directory of ``path`` does not exist.
        """
        rank = {"dense": self.dim, "lowrank": getattr(self._cov, "rank", None)}.get(self.representation)
        metadata = {
            "shape": list(self._shape),
            "representation": self.representation,
            "rank": rank,
            "n_samples": self.n_samples,
            "scale": self.scale,
            "source": self.source,
            "normalization": "n-1",
        }
        arrays = {"mean": self._mean.numpy(), **self._cov.arrays()}
        write = write_safetensors if _is_safetensors(path) else write_npz
        write(path, FORMAT, FORMAT_VERSION, metadata, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gaussian:
        """Read statistics written by :meth:`save` (safetensors or ``.npz``). Never unpickles.

        The kind is read from the file's first bytes (a zip archive is ``.npz``), whatever its
        name. Every array is checked (dimensions, dtype, finite, non-negative eigenvalues and
        residual), then the shapes against each other and the metadata; a file of a newer format
        version is refused with a message that says to upgrade.

        Raises:
            ValueError: if the file is not a gaussport statistics file, is damaged, or is
                inconsistent (the message names the file).
            FileNotFoundError: the file does not exist.
        """
        hint = (
            " (expected a .safetensors or .npz file written by Gaussian.save or `gaussport fit`); convert "
            "other statistics with Gaussian(mean, cov) and save them."
        )
        read = read_safetensors if _is_safetensors(path, sniff=True) else read_npz
        meta, arrays = read(
            path,
            FORMAT,
            FORMAT_VERSION,
            what="statistics",
            hint=hint,
            fields={"shape": (list,), "representation": (str,)},
            arrays=lambda meta: {"mean": Array(ndim=1), **covariance_arrays(meta["representation"])},
        )
        try:
            shape = tuple(as_int(s, "shape", minimum=1) for s in meta["shape"])
            mean = torch.from_numpy(arrays["mean"]).reshape(shape)
            cov = covariance_from_arrays(meta["representation"], arrays)
            rank = meta.get("rank")
            expected = {"dense": cov.dim, "lowrank": getattr(cov, "rank", None)}.get(cov.kind)
            if "rank" in meta and rank != expected:
                raise ValueError(f"its metadata gives rank {rank!r} but the arrays hold {expected}")
            return cls(
                mean,
                cov,
                n_samples=meta.get("n_samples"),
                scale=meta.get("scale"),
                source=meta.get("source"),
            )
        except (TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc


def _is_safetensors(path: str | os.PathLike[str], *, sniff: bool = False) -> bool:
    """Whether ``path`` is (to be) a safetensors file: by its name, or (``sniff``) by its first bytes.

    An existing file that starts like a zip archive is an ``.npz``; one that starts with a
    safetensors header length and ``{`` is safetensors, whatever the name says.
    """
    if sniff and os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(9)
        if head[:4] == b"PK\x03\x04":
            return False
        if len(head) == 9 and head[8:9] == b"{":
            return True
    return os.fspath(path).endswith(".safetensors")


def fit_low_rank(
    batches: Callable[[], Iterable[Tensor]],
    *,
    rank: int,
    oversample: int = 10,
    passes: int = 2,
    method: str = "randomized",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    disable: bool | None = None,
    scale: str | None = None,
    source: str | None = None,
) -> Gaussian:
    """Fit ``N(mu, U diag(lam) U^T + residual (I - U U^T))`` from streamed data, never forming ``d x d``.

    Order: ``passes + 1`` passes over the data, ``O(n d l)`` time each with ``l = rank + oversample``;
    memory ``O(d l)`` (``O(d l (passes + 1))`` for ``"krylov"``) plus one batch. The mean, the
    trace and the first sketch share the first pass; the covariance is divided by ``n - 1`` as in
    :meth:`Gaussian.fit`. Derivation and measured accuracy: docs/fitting.md.

    Args:
        batches: a zero-argument callable returning a fresh iterable of ``[b, *sample_shape]``
            tensors; each call is one pass and must yield the same data (e.g. ``lambda:
            data.split(256)`` or ``lambda: iter(loader)`` without random augmentation).
        rank: ``r``, the number of eigenpairs kept, ``1 <= r <= d``.
        oversample: extra sketch columns (``l = min(r + oversample, d)``); 5-20 is usual.
        passes: further passes after the first: power iterations for ``"randomized"`` (``0`` is
            the single-pass Nystrom sketch), Krylov blocks for ``"krylov"``.
        method: ``"randomized"`` (subspace iteration) or ``"krylov"`` (block Krylov).
        generator: the source of the random test matrix (``None``: a generator seeded with 0, never
            the global RNG).
        device: where the products run (e.g. ``"cuda"``); default: the CPU.
        dtype: dtype of the ``[d, l]`` sketches, ``torch.float64`` (default) or ``torch.float32``
            (half the memory; the mean, trace and small matrices stay float64).
        disable: disables the progress bar (``None``: only on a terminal, as tqdm does).
        scale: the data units, stored as metadata.
        source: provenance, stored as metadata.

    Returns:
        A :class:`Gaussian` with a :class:`LowRankPlusIsotropic` covariance whose residual is the
        mean discarded variance ``(tr C - sum lam) / (d - r)`` (0 when ``r = d``).

    Raises:
        TypeError: ``batches`` is not callable, an integer argument is not an integer, ``dtype``,
            ``generator`` or ``method`` has the wrong type.
        ValueError: ``rank`` outside ``[1, d]``, ``oversample < 0``, ``passes < 0``, an unknown
            ``method`` or ``dtype``, fewer than 2 samples, non-finite data, or passes that do not
            see the same data.
    """
    for value, what in ((scale, "scale"), (source, "source")):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{what} must be a string or None; got {type(value).__name__}.")
    fit = sketch_low_rank(
        batches,
        rank=rank,
        oversample=oversample,
        passes=passes,
        method=method,
        generator=generator,
        device=device,
        dtype=dtype,
        disable=disable,
    )
    return Gaussian(fit.mean, fit.covariance, n_samples=fit.count, scale=scale, source=source)
