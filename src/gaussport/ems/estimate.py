"""Monte-Carlo EMS for any denoiser: the paper's procedure (Zheng et al. 2023, §3.4, App. C.1.1).

At each level ``lambda_j`` of a uniform grid, on forward-diffused data ``x = x0 + sigma z``
(VE coordinates; ``x0`` from the training data, never from ODE samples):

1. ``l_j = E[(sigma grad_x eps v) * v]`` with Rademacher ``v`` (Hutchinson's diagonal estimator).
   In VE coordinates ``sigma grad_x eps = I - grad_x D``, so one forward-mode JVP of ``D`` per
   sample: ``(v - J_D v) * v``.
2. ``l'`` by central differences in lambda (second-order one-sided ones at the ends), then a
   moving average of ``2 smoothing + 1`` points truncated at the ends (the released script:
   ``smoothing=5``; its bias grows like ``(smoothing h)^2``, so use less on coarse grids).
3. ``f = sigma eps - l x = (1 - l) x - D`` and its derivative along the ODE
   ``dx/dlambda = D - x`` (EDM: ``alpha = 1``; *not* the VP tangent the ScoreSDE script
   hard-codes): ``f' = -l' x + (1 - l)(D - x) - dD/dlambda``, where
   ``dD/dlambda = J_D (D - x) - sigma dD/dsigma`` is one JVP with tangents ``(D - x, -sigma)``.
4. ``s = Cov(f, f') / Var f`` and ``b = E f' - s E f`` per dimension, from streaming
   (Chan-merged, centred) moments in float64.

Cost: ``(N + 1) K`` JVPs for ``l`` plus ``(N + 1) K`` (forward + JVP) for ``f`` -- about five
network evaluations per sample and level. :class:`EMSEstimator` streams over batches, draws
every batch from its own seed (so an interrupted run resumed from :meth:`EMSEstimator.save`
gives the same numbers as an uninterrupted one), shows a tqdm bar, and runs wherever the
denoiser runs (``device=``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._files import Array, read_npz, write_npz
from ..denoiser import Denoiser
from ._statistics import EMS, _check_intervals

__all__ = ["EMSEstimator", "estimate_ems", "central_derivative"]

FORMAT = "gaussport.ems-estimator"
FORMAT_VERSION = 1
_PHASES = ("l", "f", "done")

Data = Tensor | Callable[[int, torch.Generator], Tensor]


def _seed(*parts: int) -> int:
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _jvp(
    fn: Callable[[Tensor, Tensor], Tensor], primals: tuple[Tensor, Tensor], tangents: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Forward-mode JVP of ``fn`` with two fallbacks.

    Fused attention kernels (``scaled_dot_product_attention``'s flash/efficient backends) have no
    forward-mode derivative: the JVP is retried with the math backend, which is differentiable
    everywhere; models without forward AD at all use the double-backward trick.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    errors = []
    for attempt in ("forward", "math attention", "double backward"):
        try:
            if attempt == "forward":
                return torch.func.jvp(fn, primals, tangents)
            with sdpa_kernel([SDPBackend.MATH]):
                if attempt == "math attention":
                    return torch.func.jvp(fn, primals, tangents)
                with torch.enable_grad():
                    return torch.autograd.functional.jvp(fn, primals, tangents)
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            errors.append(f"{attempt}: {exc}")
    raise RuntimeError(
        "EMS estimation needs a JVP of the denoiser in x and sigma, and every way failed ("
        + "; ".join(errors)
        + "). The denoiser must be differentiable in x and sigma (no .item() on sigma, no in-place ops "
        "on its inputs)."
    )


def _moving_average(values: Tensor, half_width: int) -> Tensor:
    if half_width <= 0:
        return values
    n = values.shape[0]
    out = torch.empty_like(values)
    for j in range(n):
        lo, hi = max(0, j - half_width), min(n, j + half_width + 1)
        out[j] = values[lo:hi].mean(0)
    return out


def central_derivative(values: Tensor, h: float) -> Tensor:
    """``d values / d lambda`` on a uniform grid, second order everywhere.

    Central differences inside; at the ends the one-sided second-order formulas
    ``(-3 v_0 + 4 v_1 - v_2) / 2h`` (the released script uses first-order ones there, whose
    O(h) error is divided by ``l`` in ``s`` -- large at low noise, where ``l -> 0``).
    Two levels (one interval) fall back to the first-order difference.
    """
    out = torch.empty_like(values)
    if values.shape[0] == 2:
        out[:] = (values[1] - values[0]) / h
        return out
    out[1:-1] = (values[2:] - values[:-2]) / (2.0 * h)
    out[0] = (-3.0 * values[0] + 4.0 * values[1] - values[2]) / (2.0 * h)
    out[-1] = (3.0 * values[-1] - 4.0 * values[-2] + values[-3]) / (2.0 * h)
    return out


class EMSEstimator:
    """A resumable Monte-Carlo estimation of EMS (module docstring).

    Args:
        sigma_min: the noise-level range of the EMS grid.
        sigma_max: the noise-level range of the EMS grid.
        intervals: ``N``; the grid has ``N + 1`` levels uniform in ``lambda = -log sigma``.
        samples: ``K``, samples per level (the paper: 1024-4096).
        batch_size: samples per denoiser call.
        seed: base seed; batch ``k`` of level ``j`` of each phase has its own derived seed.
        smoothing: half-width of the moving average applied to ``l'`` (0: none).
        l: known ``l`` on the grid (``[N + 1, *shape]``): skip step 1 (e.g. analytic ``l``).
        l_derivative: known ``l'`` on the grid: skip step 2.

    Use :meth:`run` (repeatedly, if interrupted), :meth:`save`/:meth:`load` to checkpoint, and
    :meth:`result` for the :class:`~gaussport.ems.EMS`.
    """

    def __init__(
        self,
        *,
        sigma_min: float,
        sigma_max: float,
        intervals: int = 120,
        samples: int = 1024,
        batch_size: int = 256,
        seed: int = 0,
        smoothing: int = 5,
        l: Tensor | None = None,
        l_derivative: Tensor | None = None,
    ) -> None:
        _check_intervals(intervals)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}.")
        for name, value in (("samples", samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        if not isinstance(smoothing, int) or smoothing < 0:
            raise ValueError(f"smoothing must be a non-negative integer; got {smoothing!r}.")
        if l_derivative is not None and l is None:
            raise ValueError("l_derivative needs l as well.")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.intervals, self.samples, self.batch_size = intervals, samples, batch_size
        self.seed, self.smoothing = int(seed), smoothing
        self.lambda_start, self.lambda_end = -math.log(self.sigma_max), -math.log(self.sigma_min)
        self.shape: tuple[int, ...] | None = None
        self.phase = "l"
        self.level = 0
        self.batch = 0
        self.seconds = 0.0
        self.arrays: dict[str, Tensor] = {}
        self._given_l = l is not None
        self._given_dl = l_derivative is not None
        if l is not None:
            self._set_shape(tuple(torch.as_tensor(l).shape[1:]))
            self.arrays["l_value"] = self._grid_array(l, "l")
            self.arrays["l_derivative"] = (
                self._grid_array(l_derivative, "l_derivative")
                if l_derivative is not None
                else self._derivative()
            )
            self.phase = "f"

    # ------------------------------------------------------------------ bookkeeping
    @property
    def batches_per_level(self) -> int:
        return -(-self.samples // self.batch_size)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def _lambda(self, j: int) -> float:
        if j == self.intervals:
            return self.lambda_end
        return self.lambda_start + j * (self.lambda_end - self.lambda_start) / self.intervals

    def _grid_array(self, values: Any, what: str) -> Tensor:
        t = torch.as_tensor(values).detach().to("cpu", torch.float64)
        if t.shape[0] != self.intervals + 1 or (self.shape is not None and tuple(t.shape[1:]) != self.shape):
            raise ValueError(f"{what} must have shape [{self.intervals + 1}, *shape]; got {tuple(t.shape)}.")
        return t

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if self.shape is None:
            self.shape = shape
            full = (self.intervals + 1, *shape)
            zeros = {"l_sum": full, "f_mean": full, "fd_mean": full, "f_m2": full, "ffd_m2": full}
            for name, size in zeros.items():
                self.arrays.setdefault(name, torch.zeros(size, dtype=torch.float64))
            self.arrays.setdefault("l_count", torch.zeros(self.intervals + 1, dtype=torch.float64))
            self.arrays.setdefault("f_count", torch.zeros(self.intervals + 1, dtype=torch.float64))
        elif shape != self.shape:
            raise ValueError(f"data of sample shape {shape} after data of shape {self.shape}.")

    def _derivative(self) -> Tensor:
        h = (self.lambda_end - self.lambda_start) / self.intervals
        return _moving_average(central_derivative(self.arrays["l_value"], h), self.smoothing)

    def _draw(
        self, data: Data, n: int, seed: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, torch.Generator]:
        gen = torch.Generator(device=device).manual_seed(seed)
        if isinstance(data, Tensor):
            cpu = torch.Generator().manual_seed(seed)
            index = torch.randint(data.shape[0], (n,), generator=cpu)
            x0 = data[index]
        elif callable(data):
            x0 = data(n, gen)
        else:
            raise TypeError(
                "data must be a tensor [M, *shape] of samples or a callable (n, generator) -> samples."
            )
        if not isinstance(x0, Tensor) or x0.shape[0] != n:
            raise ValueError(
                f"the data source must return a tensor with {n} rows; got {getattr(x0, 'shape', x0)}."
            )
        return x0.to(device=device, dtype=dtype), gen

    # ------------------------------------------------------------------ the work
    def run(
        self,
        denoiser: Denoiser,
        data: Data,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_batches: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        disable: bool | None = None,
    ) -> bool:
        """Continue the estimation; returns whether it is complete.

        Args:
            denoiser: ``D(x, sigma)`` (VE), differentiable in ``x`` and ``sigma``.
            data: clean training samples -- a tensor ``[M, *shape]`` (rows drawn with replacement)
                or a callable ``(n, generator) -> [n, *shape]``.
            device: where to run (default: the data tensor's device, else CPU).
            dtype: dtype of the states given to the denoiser; statistics accumulate in float64.
            max_batches: stop after this many batches (to spread the work over several calls).
            checkpoint: if given, :meth:`save` there after every completed level.
            disable: hide the progress bar.
        """
        if device is None:
            device = data.device if isinstance(data, Tensor) else torch.device("cpu")
        device = torch.device(device)
        per_level = self.batches_per_level
        levels = self.intervals + 1
        total = (0 if self._given_l else levels * per_level) + levels * per_level
        done_units = {"l": 0, "f": 0 if self._given_l else levels * per_level, "done": total}[self.phase]
        done_units += self.level * per_level + self.batch if self.phase != "done" else 0
        budget = math.inf if max_batches is None else max_batches
        start = time.perf_counter()
        with tqdm(total=total, initial=done_units, disable=disable, desc="EMS", unit="batch") as bar:
            while self.phase != "done" and budget > 0:
                self._one_batch(denoiser, data, device, dtype)
                budget -= 1
                bar.update(1)
                if self.batch == 0 and checkpoint is not None:  # a level just completed
                    self.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save(checkpoint)
        self.seconds += time.perf_counter() - start
        if checkpoint is not None:
            self.save(checkpoint)
        return self.done

    def _one_batch(self, denoiser: Denoiser, data: Data, device: torch.device, dtype: torch.dtype) -> None:
        j, k = self.level, self.batch
        n = min(self.batch_size, self.samples - k * self.batch_size)
        phase_id = _PHASES.index(self.phase)
        x0, gen = self._draw(data, n, _seed(self.seed, phase_id, j, k), device, dtype)
        self._set_shape(tuple(x0.shape[1:]))
        sigma = math.exp(-self._lambda(j))
        sig = torch.full((n,), sigma, device=device, dtype=dtype)
        x = x0 + sigma * torch.randn(x0.shape, generator=gen, device=device, dtype=dtype)

        def fn(xx: Tensor, ss: Tensor) -> Tensor:
            return denoiser(xx, ss)

        if self.phase == "l":
            v = torch.randint(0, 2, x.shape, generator=gen, device=device).to(dtype) * 2 - 1
            _, jv = _jvp(fn, (x, sig), (v, torch.zeros_like(sig)))
            sample = ((v - jv) * v).detach().to(torch.float64)
            self.arrays["l_sum"][j] += sample.sum(0).cpu()
            self.arrays["l_count"][j] += n
        else:
            l_j = self.arrays["l_value"][j].to(device=device, dtype=dtype)
            dl_j = self.arrays["l_derivative"][j].to(device=device, dtype=dtype)
            with torch.no_grad():
                d = denoiser(x, sig)
            _, dd = _jvp(fn, (x, sig), (d - x, -sig))
            a = ((1.0 - l_j) * x - d).detach().to(torch.float64)
            b = (-dl_j * x + (1.0 - l_j) * (d - x) - dd).detach().to(torch.float64)
            self._merge(j, a.cpu(), b.cpu())
        self._advance()

    def _merge(self, j: int, a: Tensor, b: Tensor) -> None:
        """Chan et al.'s pairwise update of count, means and centred second moments at level ``j``."""
        arr = self.arrays
        n_b = a.shape[0]
        mean_a, mean_b = a.mean(0), b.mean(0)
        ca, cb = a - mean_a, b - mean_b
        m2_aa, m2_ab = (ca * ca).sum(0), (ca * cb).sum(0)
        n_a = float(arr["f_count"][j])
        n = n_a + n_b
        da, db = mean_a - arr["f_mean"][j], mean_b - arr["fd_mean"][j]
        arr["f_m2"][j] += m2_aa + da * da * (n_a * n_b / n)
        arr["ffd_m2"][j] += m2_ab + da * db * (n_a * n_b / n)
        arr["f_mean"][j] += da * (n_b / n)
        arr["fd_mean"][j] += db * (n_b / n)
        arr["f_count"][j] = n

    def _advance(self) -> None:
        self.batch += 1
        if self.batch < self.batches_per_level:
            return
        self.batch = 0
        self.level += 1
        if self.level <= self.intervals:
            return
        self.level = 0
        if self.phase == "l":
            self.arrays["l_value"] = self.arrays["l_sum"] / self.arrays["l_count"].reshape(
                (-1,) + (1,) * (self.arrays["l_sum"].ndim - 1)
            )
            if not self._given_dl:
                self.arrays["l_derivative"] = self._derivative()
            self.phase = "f"
        else:
            self.phase = "done"

    # ------------------------------------------------------------------ results and files
    def result(self, metadata: dict[str, Any] | None = None) -> EMS:
        """The estimated :class:`~gaussport.ems.EMS` (``source="estimated"``, ``samples=K``).

        Raises:
            RuntimeError: if :meth:`run` has not finished.
        """
        if not self.done:
            raise RuntimeError(
                f"the estimation is not finished (phase {self.phase!r}, level {self.level}); "
                "call run() until it returns True."
            )
        arr = self.arrays
        count = arr["f_count"].reshape((-1,) + (1,) * (arr["f_mean"].ndim - 1))
        var = arr["f_m2"] / count
        cov = arr["ffd_m2"] / count
        mean_f, mean_fd = arr["f_mean"], arr["fd_mean"]
        # A dimension whose f does not vary (to round-off): every s fits, take the minimum-norm s = 0.
        ok = var > 1e-12 * (mean_f * mean_f + var)
        s = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
        b = mean_fd - s * mean_f
        meta = {
            "seed": self.seed,
            "smoothing": self.smoothing,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "l_given": self._given_l,
            **(metadata or {}),
        }
        return EMS(
            arr["l_value"],
            s,
            b,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            samples=self.samples,
            source="estimated",
            metadata=meta,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Checkpoint the accumulators (``.npz``, no pickle); resume with :meth:`load` and :meth:`run`."""
        meta = {
            "version": FORMAT_VERSION,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "intervals": self.intervals,
            "samples": self.samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "smoothing": self.smoothing,
            "shape": None if self.shape is None else list(self.shape),
            "phase": self.phase,
            "level": self.level,
            "batch": self.batch,
            "seconds": self.seconds,
            "given_l": self._given_l,
            "given_dl": self._given_dl,
        }
        arrays = {k: v.numpy() for k, v in self.arrays.items()}
        write_npz(path, FORMAT, FORMAT_VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EMSEstimator:
        """Read a checkpoint written by :meth:`save`. Never unpickles.

        Raises:
            ValueError: the file is not an estimator checkpoint, is damaged, or its metadata or
                arrays are missing or inconsistent (every array is checked: finite, of the grid's shape).
        """
        number, integer = (float, int), (int,)
        fields: dict[str, tuple[type, ...]] = {
            "sigma_min": number,
            "sigma_max": number,
            "intervals": integer,
            "samples": integer,
            "batch_size": integer,
            "seed": integer,
            "smoothing": integer,
            "shape": (list, type(None)),
            "phase": (str,),
            "level": integer,
            "batch": integer,
            "seconds": number,
            "given_l": (bool,),
            "given_dl": (bool,),
        }
        counts = Array(ndim=1, nonnegative=True, required=False)
        sums = Array(required=False)
        spec = {
            **{k: sums for k in ("l_sum", "f_mean", "fd_mean", "f_m2", "ffd_m2", "l_value", "l_derivative")},
            "l_count": counts,
            "f_count": counts,
        }
        meta, raw = read_npz(
            path, FORMAT, FORMAT_VERSION, what="EMS-estimator checkpoint", fields=fields, arrays=spec
        )
        name = repr(os.fspath(path))
        try:
            est = cls(
                sigma_min=meta["sigma_min"],
                sigma_max=meta["sigma_max"],
                intervals=meta["intervals"],
                samples=meta["samples"],
                batch_size=meta["batch_size"],
                seed=meta["seed"],
                smoothing=meta["smoothing"],
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} has damaged metadata: {exc}") from exc
        shape = None if meta["shape"] is None else tuple(meta["shape"])
        if shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise ValueError(f"{name} has damaged metadata: shape {meta['shape']!r} is not a list of ints.")
        phase, level, batch = meta["phase"], meta["level"], meta["batch"]
        if (
            phase not in _PHASES
            or not 0 <= level <= est.intervals
            or not 0 <= batch < est.batches_per_level
            or (meta["given_dl"] and not meta["given_l"])
        ):
            raise ValueError(
                f"{name} has damaged metadata: phase {phase!r}, level {level}, batch {batch} is not a "
                "position of this estimation."
            )
        accumulators = {"l_sum", "f_mean", "fd_mean", "f_m2", "ffd_m2", "l_count", "f_count"}
        needed = set() if shape is None else accumulators
        if phase != "l" or meta["given_l"]:
            needed |= {"l_value", "l_derivative"}
        missing = sorted(needed - set(raw))
        if missing:
            raise ValueError(f"{name} is incomplete: the arrays {missing} are missing.")
        grid = est.intervals + 1
        for key, value in raw.items():
            want = (grid,) if key.endswith("_count") else (grid, *(shape or ()))
            if value.shape != want:
                raise ValueError(f"{name} is inconsistent: {key!r} has shape {value.shape}, expected {want}.")
        est.shape = shape
        est.phase, est.level, est.batch = phase, level, batch
        est.seconds = float(meta["seconds"])
        est._given_l, est._given_dl = meta["given_l"], meta["given_dl"]
        est.arrays = {k: torch.from_numpy(v.astype(np.float64, copy=True)) for k, v in raw.items()}
        return est


def estimate_ems(
    denoiser: Denoiser,
    data: Data,
    *,
    sigma_min: float,
    sigma_max: float,
    intervals: int = 120,
    samples: int = 1024,
    batch_size: int = 256,
    seed: int = 0,
    smoothing: int = 5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint: str | os.PathLike[str] | None = None,
    disable: bool | None = None,
) -> EMS:
    """Estimate EMS for ``denoiser`` by the paper's procedure (module docstring); see :class:`EMSEstimator`.

    With ``checkpoint=path`` the accumulators are saved after every level, and a later call with
    the same path resumes from them (the settings stored in the checkpoint win).

    Example:
        >>> ems = estimate_ems(net, train_images, sigma_min=0.002, sigma_max=80.0,
        ...                    intervals=120, samples=1024, device="cuda")  # doctest: +SKIP
    """
    if checkpoint is not None and os.path.exists(checkpoint):
        est = EMSEstimator.load(checkpoint)
    else:
        est = EMSEstimator(
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            intervals=intervals,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            smoothing=smoothing,
        )
    est.run(denoiser, data, device=device, dtype=dtype, checkpoint=checkpoint, disable=disable)
    return est.result()
