"""Streaming moments: the mean and covariance of data seen batch by batch, in float64, centred.

The covariance of ``n`` samples is ``S / (n - 1)`` with the centred scatter
``S = sum_i (x_i - mu)(x_i - mu)^T``. :class:`MomentAccumulator` builds ``S`` from batches without
ever forming raw moments ``sum x x^T - n mu mu^T`` (whose float32 cancellation gives negative
eigenvalues, docs/warm-start.md#why-raw-moments-fail-in-float32):

* each batch is centred on its own float64 mean and its scatter ``S_b = Xc^T Xc`` is added as a
  symmetric rank-``b`` update that computes only the upper block triangle (row blocks ``i``,
  columns ``>= i``: ``(1 + 1/k) / 2`` of a full product for ``k`` blocks, the flops of a BLAS
  ``syrk``), into one ``d x d`` buffer, in place;
* batches merge by Chan, Golub & LeVeque's pairwise update
  ``S = S_a + S_b + (n_a n_b / n) delta delta^T``, ``delta = mean_b - mean_a``, in float64 (the
  merge term rides along as one extra row of the centred batch);
* the buffer is symmetrised once, at the end, or eigendecomposed in place (:meth:`MomentAccumulator.eigh`:
  LAPACK reads one triangle).

Peak memory of a dense fit: the buffer plus ``syevd``'s ``2 d^2`` workspace during the
eigendecomposition (3 ``d x d`` float64), plus one batch. Cost ``O(n d^2)`` for the scatter and
``O(d^3)`` for the eigendecomposition, on the device chosen (:func:`resolve_device`).

Across processes, :meth:`MomentAccumulator.all_reduce` merges the statistics of every rank with
``torch.distributed`` (gloo on CPU, nccl on GPU): all-gather of the counts and means, all-reduce of
the scatters, plus the between-group term ``sum_r n_r (mu_r - mu)(mu_r - mu)^T`` -- Chan's merge of
all ranks at once, equal to the single-process result up to float64 rounding.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
from torch import Tensor

from .covariance import factor_dtype

__all__ = ["MomentAccumulator", "dense_fits_in_memory", "resolve_device"]

logger = logging.getLogger("gaussport")

# Row blocks of the symmetric update: at most _BLOCKS of them, each at least _MIN_BLOCK wide (narrower
# products lose more BLAS efficiency than the skipped lower triangle saves). 8 blocks compute
# 9/16 of the full product; measured on one core at d = 2,048 within 1.15x of numpy's syrk.
_BLOCKS = 8
_MIN_BLOCK = 256
# The header exchanged across ranks: count, full flag, ndim, then the sample shape.
_MAX_NDIM = 13
_ACCUMULATE_DTYPES = (torch.float32, torch.float64)


def resolve_device(device: Any) -> torch.device:
    """``device`` (a ``torch.device``, a string such as ``"cuda:0"``, or ``None`` for the CPU) checked.

    Raises:
        TypeError: ``device`` is neither a string, a ``torch.device`` nor ``None``.
        ValueError: the string names no device type torch knows.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a torch.device, a string such as 'cpu' or 'cuda', or None; got "
            f"{type(device).__name__}."
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device {device!r} is not a device torch knows ('cpu', 'cuda', 'cuda:1', ...)."
        ) from exc


def _available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes (``MemAvailable`` on Linux for the CPU), or ``None``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def dense_fits_in_memory(d: int, device: torch.device | str | None = None, *, fraction: float = 0.5) -> bool:
    """Whether a dense fit of dimension ``d`` fits comfortably on ``device``.

    A dense fit peaks at 3 ``d x d`` float64 matrices (the scatter buffer and ``syevd``'s
    workspace); "comfortably" is at most ``fraction`` of the memory free now. Where the free memory
    cannot be read, ``d <= 16,384`` (6.4 GB) counts as fitting.
    """
    dev = resolve_device(device)
    need = 3 * d * d * 8
    free = _available_bytes(dev)
    if free is None:
        return d <= 16_384
    return need <= fraction * free


def _check_dtype(value: Any) -> torch.dtype | None:
    if value is None:
        return None
    if not isinstance(value, torch.dtype):
        raise TypeError(
            f"accumulate_dtype must be torch.float32, torch.float64 or None; got {type(value).__name__}."
        )
    if value not in _ACCUMULATE_DTYPES:
        raise ValueError(f"accumulate_dtype must be torch.float32 or torch.float64; got {value}.")
    return value


def _symmetric_update(m2: Tensor, a: Tensor) -> None:
    """``m2 += a^T a`` on the upper block triangle of ``m2`` (rows of a block, columns from its start).

    ``a`` may be float32 with a float64 ``m2``: each block's product then runs in float32 and is
    added in float64 (one ``block x d`` temporary).
    """
    d = a.shape[1]
    same = a.dtype == m2.dtype
    if d < 2 * _MIN_BLOCK:
        if same:
            m2.addmm_(a.T, a)
        else:
            m2.add_(a.T @ a)
        return
    block = max(_MIN_BLOCK, -(-d // _BLOCKS))
    for start in range(0, d, block):
        stop = min(d, start + block)
        if same:
            m2[start:stop, start:].addmm_(a[:, start:stop].T, a[:, start:])
        else:
            m2[start:stop, start:].add_(a[:, start:stop].T @ a[:, start:])


def _symmetrise(m2: Tensor) -> None:
    """Copy the upper triangle of ``m2`` onto the lower one, in place (no ``d x d`` temporary)."""
    d = m2.shape[0]
    block = max(_MIN_BLOCK, -(-d // _BLOCKS))
    for start in range(0, d, block):
        stop = min(d, start + block)
        if start:
            m2[start:stop, :start].copy_(m2[:start, start:stop].T)
        diag = m2[start:stop, start:stop]
        diag.copy_(diag.triu() + diag.triu(1).T)


class MomentAccumulator:
    """Streaming mean and covariance, each batch centred on its own mean, merged in float64.

    Batches are merged with Chan et al.'s pairwise update
    ``M2 = M2_a + M2_b + delta delta^T n_a n_b / n`` -- never raw moments ``sum x x^T - n mu mu^T``,
    whose float32 cancellation produces negative eigenvalues
    (docs/warm-start.md#why-raw-moments-fail-in-float32). The scatter is a symmetric rank-``b``
    update of one ``d x d`` buffer (module docstring). Order ``O(b d^2)`` per batch of ``b``.

    Args:
        full: accumulate the full ``d x d`` scatter matrix (else only the per-coordinate variances).
        device: where the buffer lives and the products run (default: the CPU), e.g. ``"cuda"``.
        accumulate_dtype: ``torch.float64`` (default; float32 on devices without float64, such as
            MPS) or ``torch.float32``: each batch's centred scatter is then computed in float32 and
            merged into the float64 buffer (faster on GPUs; accuracy in docs/benchmarks.md).

    Attributes:
        count: the number of samples seen.
        mean: the mean so far, flat ``[d]``, float64, on ``device`` (``None`` before any data).
        shape: the sample shape (``None`` before any data).
    """

    def __init__(
        self,
        full: bool = True,
        *,
        device: torch.device | str | None = None,
        accumulate_dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(full, bool):
            raise TypeError(f"full must be True or False; got {type(full).__name__}.")
        self.full = full
        self.device = resolve_device(device)
        self.merge_dtype = factor_dtype(self.device)
        self.accumulate_dtype = _check_dtype(accumulate_dtype) or self.merge_dtype
        self.count = 0
        self.mean: Tensor | None = None
        self.shape: tuple[int, ...] | None = None
        self._m2: Tensor | None = None
        self._released = False

    # ------------------------------------------------------------------ updates
    def update(self, batch: Tensor) -> None:
        """Add a batch of samples of shape ``[n, *sample_shape]`` (the caller's tensor is not changed).

        Raises:
            TypeError: ``batch`` is not a real tensor.
            ValueError: an empty batch or one without a sample dimension, a sample shape that
                differs from earlier batches, or NaN/infinite values.
        """
        if self._released:
            raise ValueError("this accumulator was consumed by eigh(); start a new MomentAccumulator.")
        if not isinstance(batch, Tensor):
            raise TypeError(
                f"each batch must be a tensor of shape [n, *sample_shape]; got {type(batch).__name__}."
            )
        if batch.dtype == torch.bool or batch.is_complex():
            raise TypeError(f"each batch must hold real numbers; got dtype {batch.dtype}.")
        if batch.ndim < 2 or batch.shape[0] == 0:
            raise ValueError(
                "each batch must be a tensor of shape [n, *sample_shape] with n >= 1; got shape "
                f"{tuple(batch.shape)} (one sample x of shape S is x.unsqueeze(0))."
            )
        if self.shape is None:
            if len(batch.shape) - 1 > _MAX_NDIM:
                raise ValueError(f"samples may have at most {_MAX_NDIM} dimensions; got {batch.ndim - 1}.")
            self.shape = tuple(batch.shape[1:])
        elif tuple(batch.shape[1:]) != self.shape:
            raise ValueError(
                f"batch sample shape {tuple(batch.shape[1:])} differs from earlier {self.shape}."
            )
        n_b = batch.shape[0]
        flat = batch.detach().reshape(n_b, -1)
        d = flat.shape[1]
        # One merge-dtype copy of the batch, one spare row for the Chan term; centred in place.
        work = torch.empty((n_b + 1, d), dtype=self.merge_dtype, device=self.device)
        x = work[:n_b]
        x.copy_(flat)
        mean_b = x.mean(0)
        # A NaN or infinity makes its column's mean non-finite: an O(d) check (torch.isfinite on the
        # batch would allocate a float64 copy of it).
        if not bool(torch.isfinite(mean_b).all()):
            raise ValueError("the data contain NaN or infinite values.")
        x.sub_(mean_b)
        if self.count == 0:
            self.count, self.mean = n_b, mean_b
            self._m2 = torch.zeros((d, d) if self.full else (d,), dtype=self.merge_dtype, device=self.device)
            self._add_scatter(x)
            return
        assert self.mean is not None and self._m2 is not None
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        weight = n_a * n_b / n
        if not self.full:
            self._m2.add_((x * x).sum(0)).add_(delta * delta, alpha=weight)
        elif self.accumulate_dtype == self.merge_dtype:
            work[n_b] = delta * math.sqrt(weight)  # the merge term as one more row of the update
            _symmetric_update(self._m2, work)
        else:
            self._add_scatter(x)
            self._m2.addr_(delta, delta, alpha=weight)  # the merge stays in float64
        self.mean = self.mean + delta * (n_b / n)
        self.count = n

    def _add_scatter(self, x: Tensor) -> None:
        assert self._m2 is not None
        if not self.full:
            self._m2.add_((x * x).sum(0))
        elif self.accumulate_dtype == self.merge_dtype:
            _symmetric_update(self._m2, x)
        else:
            _symmetric_update(self._m2, x.to(self.accumulate_dtype))

    # ------------------------------------------------------------------ results
    def _checked(self) -> Tensor:
        if self._released:
            raise ValueError("this accumulator was consumed by eigh(); its buffer now holds eigenvectors.")
        if self.count < 2 or self._m2 is None:
            raise ValueError(f"a covariance needs at least 2 samples; got {self.count}.")
        return self._m2

    @property
    def m2(self) -> Tensor | None:
        """The centred scatter ``S`` (``[d, d]``, or ``[d]`` variances times ``n - 1``); ``None`` before data.

        The accumulator's own buffer, symmetrised in place (no copy): changing it changes the
        accumulator. :meth:`covariance` returns a new tensor.
        """
        if self._m2 is None or self._released:
            return None
        if self.full:
            _symmetrise(self._m2)
        return self._m2

    def covariance(self) -> Tensor:
        """The unbiased covariance (divided by ``n - 1``), float64, on the CPU; a new tensor.

        Dense: ``[d, d]`` symmetric (one more ``d x d`` matrix); diagonal mode: the ``[d]`` variances.
        """
        m2 = self._checked()
        if self.full:
            _symmetrise(m2)
        return (m2 / (self.count - 1)).to("cpu", torch.float64)

    def variances(self) -> Tensor:
        """The per-coordinate variances ``[d]`` (divided by ``n - 1``), float64, on the CPU."""
        m2 = self._checked()
        diag = m2.diagonal() if self.full else m2
        return (diag / (self.count - 1)).to("cpu", torch.float64)

    def eigh(self) -> tuple[Tensor, Tensor]:
        """Eigendecompose the covariance in place: ``(eigenvalues [d] ascending, eigenvectors [d, d])``.

        The eigenvectors (columns) overwrite the accumulator's buffer, so no further ``d x d``
        matrix is formed besides LAPACK's ``syevd`` workspace (``2 d^2``); afterwards the accumulator
        holds no buffer and accepts no more data. Runs on :attr:`device` (seconds on a GPU where a
        CPU takes minutes), in the merge dtype. Order ``O(d^3)``.

        Raises:
            ValueError: fewer than 2 samples, or a diagonal-mode accumulator.
        """
        if not self.full:
            raise ValueError("eigh needs a full accumulator (MomentAccumulator(full=True)).")
        m2 = self._checked()
        m2.div_(self.count - 1)
        # Row-major upper triangle = column-major lower triangle: LAPACK works on the transposed view
        # in place (column-major is its layout), reading only that triangle.
        view = m2.mT
        lam = torch.empty(m2.shape[0], dtype=m2.dtype, device=m2.device)
        self._m2, self._released = None, True
        try:
            torch.linalg.eigh(view, UPLO="L", out=(lam, view))
        except RuntimeError:  # a backend refusing the aliased output: a copy instead
            lam, view = torch.linalg.eigh(view, UPLO="L")
        return lam, view

    # ------------------------------------------------------------------ distributed
    def all_reduce(self, group: Any = None) -> None:
        """Merge the statistics of every process of ``group`` (the default group if ``None``), in place.

        Every rank ends with the count, mean and scatter of all ranks' data together, equal to one
        process seeing all the data up to float64 rounding: the counts and means are all-gathered,
        the scatters all-reduced (summed) and the between-group term
        ``sum_r n_r (mu_r - mu)(mu_r - mu)^T`` added (Chan's merge of all ranks at once). A rank
        without data takes part with a count of 0. Communication ``O(d^2)`` per rank. With nccl
        the accumulator must live on the rank's GPU (``device="cuda"``).

        Raises:
            ValueError: no process group is initialised, the ranks' sample shapes or modes differ,
                no rank saw data, or nccl with a CPU accumulator.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed fitting needs an initialised process group: call "
                "torch.distributed.init_process_group(...) first (torchrun sets up the environment)."
            )
        if self._released:
            raise ValueError("this accumulator was consumed by eigh(); all_reduce before eigh().")
        if dist.get_backend(group) == "nccl" and self.device.type != "cuda":
            raise ValueError(
                "the nccl backend reduces GPU tensors: create the accumulator with device='cuda'."
            )
        world = dist.get_world_size(group)
        header = torch.zeros(3 + _MAX_NDIM, dtype=torch.int64)
        header[0], header[1] = self.count, int(self.full)
        if self.shape is not None:
            header[2] = len(self.shape)
            header[3 : 3 + len(self.shape)] = torch.tensor(self.shape, dtype=torch.int64)
        headers = [torch.empty_like(header, device=self.device) for _ in range(world)]
        dist.all_gather(headers, header.to(self.device), group=group)
        table = torch.stack(headers).cpu().tolist()
        shapes = {tuple(row[3 : 3 + row[2]]) for row in table if row[0] > 0}
        modes = {row[1] for row in table}
        # Every rank sees the same table, so every rank raises the same error (no rank hangs).
        if len(modes) > 1:
            raise ValueError("the ranks' accumulators differ in mode (full=True on some, False on others).")
        if not shapes:
            raise ValueError("no process has any data to fit.")
        if len(shapes) > 1:
            raise ValueError(f"the ranks' data have different sample shapes: {sorted(shapes)}.")
        shape = shapes.pop()
        d = math.prod(shape)
        counts = [row[0] for row in table]
        if self.count == 0:
            self.shape = shape
            self.mean = torch.zeros(d, dtype=self.merge_dtype, device=self.device)
            self._m2 = torch.zeros((d, d) if self.full else (d,), dtype=self.merge_dtype, device=self.device)
        assert self.mean is not None and self._m2 is not None
        means = [torch.empty_like(self.mean) for _ in range(world)]
        dist.all_gather(means, self.mean.contiguous(), group=group)
        dist.all_reduce(self._m2, op=dist.ReduceOp.SUM, group=group)
        total = sum(counts)
        mean = sum(
            (m * (c / total) for m, c in zip(means, counts, strict=True) if c), torch.zeros_like(self.mean)
        )
        spread = torch.stack([(m - mean) * math.sqrt(c) for m, c in zip(means, counts, strict=True)])
        if self.full:
            self._m2.addmm_(spread.T, spread)
        else:
            self._m2.add_((spread * spread).sum(0))
        self.count, self.mean = total, mean
