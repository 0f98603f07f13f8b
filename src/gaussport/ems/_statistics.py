"""The EMS value object: DPM-Solver-v3's statistics on their own uniform lambda grid."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _deprecation
from .._checks import Grid, as_grid, as_int
from .._files import Array, read_npz, write_npz
from ._quadrature import RULES, step_integrals

__all__ = ["EMS", "StepCoefficients", "Coefficients"]

FORMAT = "gaussport.ems"
FORMAT_VERSION = 1

# A level within this fraction of an EMS cell of a node is that node (float round-off of
# sigma = exp(-lambda) round trips), never a new quadrature node.
_NODE_TOL = 1e-7
# The coefficient memo of one EMS value is bounded by the bytes it holds (on any device), so a
# long-lived EMS cannot pin much device memory; see EMS.coefficients.
_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True, slots=True)
class StepCoefficients:
    """The integrals DPM-Solver-v3 needs for one step from ``lam_a`` to ``lam_b`` (docs/ems.md).

    Attributes:
        decay: ``exp(-int l)``.
        s_gain: ``exp(int s)``.
        b_gain: ``int_{lam_a}^{lam_b} exp(-int_{lam_a}^r s) b(r) dr``.
        bias: ``int exp(E(u)) B(u) du`` with ``E = int (l + s)``, ``B`` the integral above up to ``u``.
        phi: ``phi_k = int exp(E(u)) (u - lam_a)^k / k! du`` for ``k = 0..degree``.
    """

    decay: Tensor
    s_gain: Tensor
    b_gain: Tensor
    bias: Tensor
    phi: tuple[Tensor, ...]

    def to(self, device: torch.device, dtype: torch.dtype) -> StepCoefficients:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        return StepCoefficients(
            move(self.decay),
            move(self.s_gain),
            move(self.b_gain),
            move(self.bias),
            tuple(move(p) for p in self.phi),
        )


@dataclass(frozen=True, slots=True)
class Coefficients:
    """Everything a DPM-Solver-v3 run precomputes: per level ``l``, per step the integrals.

    Attributes:
        sigmas: the positive levels of the run, decreasing (Python floats).
        lambdas: ``-log sigma`` of each level.
        l: the EMS ``l`` at each level (interpolated linearly in lambda between EMS nodes).
        steps: one :class:`StepCoefficients` per interval ``sigmas[i] -> sigmas[i + 1]``.
        rule: the quadrature rule used.
        memo: what a solver derives from this table once per run and keeps with it (DPM-Solver-v3's
            fused per-step updates), so runs that reuse the table reuse it too.

    The coefficients are tensors of the EMS shape, or Python floats where they are the same
    constants in every dimension (the degenerate EMS in closed form).
    """

    sigmas: Grid
    lambdas: tuple[float, ...]
    l: tuple[Tensor, ...]
    steps: tuple[StepCoefficients, ...]
    rule: str
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def to(self, device: torch.device, dtype: torch.dtype) -> Coefficients:
        return Coefficients(
            self.sigmas,
            self.lambdas,
            tuple(v.to(device=device, dtype=dtype) for v in self.l),
            tuple(c.to(device, dtype) for c in self.steps),
            self.rule,
        )

    @property
    def nbytes(self) -> int:
        """The memory the tensors of this table (and of its memo) hold."""
        values: list[Any] = list(self.l)
        for step in self.steps:
            values += [step.decay, step.s_gain, step.b_gain, step.bias, *step.phi]
        return _tensor_bytes(values) + _tensor_bytes(list(self.memo.values()))


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in ``value`` (nested tuples, lists and slotted dataclasses)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    slots = getattr(type(value), "__slots__", ())
    if dataclasses.is_dataclass(value) and slots:
        return sum(_tensor_bytes(getattr(value, name)) for name in slots)
    return 0


def _as_array(t: Any, what: str, copy: bool = True) -> Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise TypeError(f"EMS {what} must be a tensor or array; got {type(t).__name__}.")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"EMS {what} must be real numbers; got dtype {t.dtype}.")
    # A copy (also of NumPy arrays): the value must not change when the caller's array does -- unless
    # the caller hands over tensors made for this value (EMS._adopt).
    t = t.detach().to("cpu", torch.float64, copy=copy)
    if t.ndim < 1 or t.shape[0] < 2:
        raise ValueError(f"EMS {what} must have shape [N + 1, *shape] with N >= 1; got {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"EMS {what} contains NaN or infinite values.")
    return t.contiguous()


class EMS:
    """Empirical model statistics of DPM-Solver-v3 (Zheng et al. 2023): ``l``, ``s``, ``b`` over lambda.

    The statistics are per-dimension curves on a uniform grid of ``N + 1`` levels
    ``lambda_j = lambda_start + j (lambda_end - lambda_start) / N`` with ``lambda = -log sigma``,
    from ``sigma_max`` (``j = 0``) down to ``sigma_min`` (``j = N``). The grid is part of the value:
    a run that starts mid-way (a warm start) integrates the same curves over its own sub-range,
    never re-maps them (docs/ems.md#runs-that-start-mid-way). The curves are the same in VE (EDM) and VP
    coordinates,
    because ``sigma * grad eps`` and ``f = (sigma eps - l x) / alpha`` do not depend on the scaling
    ``alpha`` (docs/ems.md#the-solver-in-ve-coordinates), so statistics computed with either apply to both.

    Sources: :meth:`analytic` (closed form from a Gaussian), :func:`gaussport.ems.estimate_ems`
    (Monte Carlo, any denoiser), :meth:`degenerate` (``l = 1, s = b = 0``: DPM-Solver++),
    :meth:`load` (a file written by :meth:`save`), :meth:`from_official` (the reference's ``.npz``).

    Args:
        l: ``[N + 1, *shape]`` arrays; ``shape`` must broadcast against the data's sample
            shape (``()`` or ``(1, 1, 1)`` for statistics shared by all dimensions).
        s: ``[N + 1, *shape]`` arrays; ``shape`` must broadcast against the data's sample
            shape (``()`` or ``(1, 1, 1)`` for statistics shared by all dimensions).
        b: ``[N + 1, *shape]`` arrays; ``shape`` must broadcast against the data's sample
            shape (``()`` or ``(1, 1, 1)`` for statistics shared by all dimensions).
        sigma_min: the noise levels of the last and first grid point.
        sigma_max: the noise levels of the last and first grid point.
        samples: number of samples per level the statistics were estimated from (``None``: exact).
        source: provenance, e.g. ``"analytic"``, ``"estimated"``, ``"degenerate"``.
        metadata: free-form JSON-serialisable details (model id, schedule, settings).
    """

    def __init__(
        self,
        l: Tensor | np.ndarray,
        s: Tensor | np.ndarray,
        b: Tensor | np.ndarray,
        *,
        sigma_min: float,
        sigma_max: float,
        samples: int | None = None,
        source: str = "",
        metadata: dict[str, Any] | None = None,
        _copy: bool = True,
    ) -> None:
        l64, s64, b64 = _as_array(l, "l", _copy), _as_array(s, "s", _copy), _as_array(b, "b", _copy)
        if not l64.shape == s64.shape == b64.shape:
            raise ValueError(
                "EMS l, s, b must have one shape; got "
                f"{tuple(l64.shape)}, {tuple(s64.shape)}, {tuple(b64.shape)}."
            )
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number, Tensor)):
                raise TypeError(f"EMS {name} must be a number; got {value!r}.")
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max):
            raise ValueError(
                f"EMS need a noise-level range 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max}."
            )
        samples = as_int(samples, "samples", minimum=1, allow_none=True)
        if not isinstance(source, str):
            raise TypeError(f"EMS source must be a string; got {type(source).__name__}.")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"EMS metadata must be a dict or None; got {type(metadata).__name__}.")
        try:
            # Metadata is saved as JSON: refuse now what could not be saved later (and copy it).
            json.dumps(metadata or {})
            metadata = copy.deepcopy(dict(metadata or {}))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"EMS metadata must be plain JSON values (int, float, str, bool, lists, dicts); {exc}. "
                "Convert NumPy numbers with int()/float() and tensors with .item() or .tolist()."
            ) from exc
        self._l, self._s, self._b = l64, s64, b64
        self._sigma_min, self._sigma_max = sigma_min, sigma_max
        self._lambda_start, self._lambda_end = -math.log(sigma_max), -math.log(sigma_min)
        self.samples = samples
        self.source = str(source)
        self.metadata = metadata
        self._cache: OrderedDict[tuple, Coefficients] = OrderedDict()
        self._degenerate: bool | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def degenerate(
        cls,
        shape: Sequence[int] = (),
        *,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        intervals: int = 1,
    ) -> EMS:
        """``l = 1, s = 0, b = 0``: DPM-Solver-v3 becomes DPM-Solver++ ('taylor' type, exact phi-functions).

        With the default exponential quadrature the reduction is exact to round-off for any
        ``intervals`` (docs/ems.md), so one interval suffices; the trapezoid rule needs many.
        """
        _check_intervals(intervals)
        full = (intervals + 1, *tuple(int(d) for d in shape))
        return cls(
            torch.ones(full, dtype=torch.float64),
            torch.zeros(full, dtype=torch.float64),
            torch.zeros(full, dtype=torch.float64),
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            source="degenerate",
        )

    @classmethod
    def _adopt(cls, l: Tensor, s: Tensor, b: Tensor, **kwargs: Any) -> EMS:
        """EMS that take over tensors made for them (no defensive copy: one table less at peak)."""
        return cls(l, s, b, _copy=False, **kwargs)

    @classmethod
    def analytic(cls, gaussian: Any, *, sigma_min: float, sigma_max: float, intervals: int = 1200) -> EMS:
        """Deprecated: use :func:`gaussport.ems.analytic_ems` (the one way to build analytic EMS)."""
        from .analytic import analytic_ems  # deprecated alias; analytic imports this module

        _deprecation.warn("gaussport.ems.EMS.analytic(...)", "gaussport.ems.analytic_ems(...)")
        return analytic_ems(gaussian, sigma_min=sigma_min, sigma_max=sigma_max, intervals=intervals)

    @classmethod
    def from_lambdas(
        cls, l: Any, s: Any, b: Any, *, lambda_start: float, lambda_end: float, **kwargs: Any
    ) -> EMS:
        """EMS whose grid is given in half-logSNR ``lambda = log(alpha / sigma_vp) = -log sigma``.

        ``lambda_start`` belongs to the first row (high noise), ``lambda_end`` to the last.
        """
        return cls(
            l,
            s,
            b,
            sigma_min=math.exp(-float(lambda_end)),
            sigma_max=math.exp(-float(lambda_start)),
            **kwargs,
        )

    @classmethod
    def from_official(
        cls,
        l_file: str | os.PathLike[str],
        sb_file: str | os.PathLike[str],
        *,
        lambda_start: float,
        lambda_end: float,
        samples: int | None = None,
    ) -> EMS:
        """Read the reference implementation's ``l.npz`` (key ``l``) and ``sb.npz`` (keys ``s``, ``b``).

        Those files carry no metadata: the lambda range of their computation must be supplied --
        for the reference's constructor arguments ``t_start``, ``t_end`` it is
        ``lambda_start = ns.marginal_lambda(t_start)``, ``lambda_end = ns.marginal_lambda(t_end)``
        (for EDM, ``-log t``). Read without unpickling.
        """
        for file in (l_file, sb_file):
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{os.fspath(file)!r} does not exist; check the path.")
        try:
            with np.load(l_file, allow_pickle=False) as lf, np.load(sb_file, allow_pickle=False) as sbf:
                l, s, b = lf["l"], sbf["s"], sbf["b"]
        except Exception as exc:  # noqa: BLE001 - every way a damaged or foreign file fails is one error
            raise ValueError(
                f"cannot read the reference EMS files {os.fspath(l_file)!r} (key 'l') and "
                f"{os.fspath(sb_file)!r} (keys 's', 'b'): {type(exc).__name__}: {exc}"
            ) from exc
        return cls.from_lambdas(
            l,
            s,
            b,
            lambda_start=lambda_start,
            lambda_end=lambda_end,
            samples=samples,
            source="official",
            metadata={"files": [os.fspath(l_file), os.fspath(sb_file)]},
        )

    # ------------------------------------------------------------------ properties
    @property
    def l(self) -> Tensor:
        """``[N + 1, *shape]`` float64 (CPU)."""
        return self._l

    @property
    def s(self) -> Tensor:
        return self._s

    @property
    def b(self) -> Tensor:
        return self._b

    @property
    def shape(self) -> tuple[int, ...]:
        """The sample shape the statistics are given for (broadcast against the data's)."""
        return tuple(self._l.shape[1:])

    @property
    def intervals(self) -> int:
        """``N``: the grid has ``N + 1`` levels."""
        return self._l.shape[0] - 1

    @property
    def sigma_min(self) -> float:
        return self._sigma_min

    @property
    def sigma_max(self) -> float:
        return self._sigma_max

    @property
    def lambda_range(self) -> tuple[float, float]:
        """``(lambda_start, lambda_end) = (-log sigma_max, -log sigma_min)``."""
        return self._lambda_start, self._lambda_end

    @property
    def lambdas(self) -> tuple[float, ...]:
        """The grid in lambda, increasing (row ``j`` of ``l``, ``s``, ``b``)."""
        return tuple(self._node(j) for j in range(self.intervals + 1))

    @property
    def sigmas(self) -> Grid:
        """The grid as noise levels, decreasing."""
        return tuple(math.exp(-lam) for lam in self.lambdas)

    def __repr__(self) -> str:
        return (
            f"EMS(shape={self.shape}, intervals={self.intervals}, sigma=[{self._sigma_min:g}, "
            f"{self._sigma_max:g}], samples={self.samples}, source={self.source!r})"
        )

    # ------------------------------------------------------------------ grid helpers
    def _node(self, j: int) -> float:
        n = self.intervals
        if j == n:
            return self._lambda_end
        return self._lambda_start + j * (self._lambda_end - self._lambda_start) / n

    @property
    def _h(self) -> float:
        return (self._lambda_end - self._lambda_start) / self.intervals

    def _position(self, lam: float) -> float:
        """The fractional grid index of ``lam``; values within round-off of a node are that node."""
        pos = (lam - self._lambda_start) / self._h
        nearest = round(pos)
        return float(nearest) if abs(pos - nearest) <= _NODE_TOL else pos

    def covers(self, sigmas: Sequence[float]) -> bool:
        """Whether every positive level of ``sigmas`` lies in ``[sigma_min, sigma_max]`` (to round-off)."""
        positive = [float(s) for s in sigmas if s > 0.0]
        return all(-_NODE_TOL <= self._position(-math.log(s)) <= self.intervals + _NODE_TOL for s in positive)

    def check_covers(self, sigmas: Sequence[float]) -> None:
        """Raise a ``ValueError`` naming the fix if the run leaves the EMS range (never re-map)."""
        if self.covers(sigmas):
            return
        positive = [float(s) for s in sigmas if s > 0.0]
        raise ValueError(
            f"the run's noise levels [{min(positive):.6g}, {max(positive):.6g}] leave the range of the EMS "
            f"[{self._sigma_min:.6g}, {self._sigma_max:.6g}]. EMS are tied to the lambda range they were "
            "computed on and are never stretched onto another one (the reference implementation's silent "
            "re-mapping, docs/ems.md#runs-that-start-mid-way). Compute EMS that cover the run "
            "(analytic_ems(gaussian, sigma_min=..., sigma_max=...) or estimate_ems(..., sigma_min=..., "
            "sigma_max=...)), or keep the grid inside the EMS range."
        )

    def check_shape(self, sample_shape: Sequence[int]) -> None:
        """Raise a ``ValueError`` unless the EMS broadcast against data of ``sample_shape``."""
        sample_shape = tuple(int(d) for d in sample_shape)
        # By hand: torch.broadcast_shapes imports sympy (seconds) on first use.
        ok = len(self.shape) <= len(sample_shape) and all(
            e in (1, d) for e, d in zip(reversed(self.shape), reversed(sample_shape), strict=False)
        )
        if not ok:
            raise ValueError(
                f"EMS of shape {self.shape} do not fit data of sample shape {sample_shape}; compute them "
                "for this data shape (one value per dimension) or use a broadcastable shape such as ()."
            )

    def snap(self, sigmas: Tensor | Sequence[float]) -> Grid:
        """``sigmas`` with every positive level moved to the nearest EMS grid level (a trailing 0 is kept).

        This is the reference implementation's step quantisation (``convert_to_indexes``). gaussport's
        solver does not need it -- it interpolates the EMS at any level -- but a snapped grid passed
        to :func:`gaussport.solve` reproduces the reference exactly, and the snapped grid is then
        what the run reports as integrated.

        Raises:
            ValueError: if a level is outside the EMS range, or two levels snap to one grid level
                (the reference then divides by zero): use a finer EMS grid or fewer steps.
        """
        grid = as_grid(sigmas)
        self.check_covers(grid)
        indexes = [round(self._position(-math.log(s))) for s in grid if s > 0.0]
        if len(set(indexes)) != len(indexes):
            raise ValueError(
                f"two steps snap to the same EMS level (EMS grid indexes {indexes}); the EMS grid "
                f"({self.intervals} intervals) is too coarse for this many steps."
            )
        snapped = tuple(math.exp(-self._node(j)) for j in indexes)
        return snapped + ((0.0,) if grid[-1] == 0.0 else ())

    def at(self, lam: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(l, s, b)`` at ``lam``, linear in lambda between grid levels (float64, CPU)."""
        pos = self._position(float(lam))
        if not -_NODE_TOL <= pos <= self.intervals + _NODE_TOL:
            raise ValueError(f"lambda = {lam} is outside the EMS range {self.lambda_range}.")
        pos = min(max(pos, 0.0), float(self.intervals))
        j = min(int(math.floor(pos)), self.intervals - 1)
        t = pos - j
        if t == 0.0:
            return self._l[j], self._s[j], self._b[j]
        if t == 1.0:
            return self._l[j + 1], self._s[j + 1], self._b[j + 1]
        return tuple((1.0 - t) * a[j] + t * a[j + 1] for a in (self._l, self._s, self._b))  # type: ignore[return-value]

    # ------------------------------------------------------------------ coefficients
    def coefficients(
        self,
        sigmas: Sequence[float],
        *,
        degree: int,
        rule: str = "exponential",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> Coefficients:
        """The DPM-Solver-v3 integrals for a run over the positive ``sigmas`` (float64, memoised).

        Tables are memoised on this EMS value by what they depend on (levels, degree, rule, device,
        dtype), least recently used first out once they hold more than 64 MiB; a single table is
        kept whatever its size. :meth:`clear_cache` drops them.

        Each step is integrated over its own nodes: the EMS grid levels strictly inside the step
        plus its two ends, where ``l, s, b`` are interpolated linearly in lambda. Nothing is
        snapped, so the run integrates exactly the levels it was given.

        Args:
            sigmas: decreasing positive levels (a trailing 0 is ignored: the solver's step to 0 is
                ``x = D``).
            degree: highest Taylor degree needed (order - 1, plus one for a pseudo-order corrector).
            rule: ``"exponential"`` or ``"trapezoid"`` (docs/ems.md#step-integrals-and-quadrature).
            device: where the solver wants them. They are computed in float64 on a CUDA
                device when that is the target (seconds for latent-size data on a CPU), else on
                the CPU, and cast once.
            dtype: where the solver wants them. They are computed in float64 on a CUDA
                device when that is the target (seconds for latent-size data on a CPU), else on
                the CPU, and cast once.
        """
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")
        levels = tuple(float(s) for s in sigmas if s > 0.0)
        self.check_covers(levels)
        target = torch.device(device) if device is not None else torch.device("cpu")
        key = (levels, int(degree), rule, target, dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        work = target if target.type == "cuda" else torch.device("cpu")  # float64 wherever it is fast
        base_key = (levels, int(degree), rule, work, torch.float64)
        table = self._cache.get(base_key)
        if table is None:
            lambdas = tuple(-math.log(s) for s in levels)
            l_at = tuple(self.at(lam)[0].to(work) for lam in lambdas)
            steps = tuple(
                self._step(lambdas[i], lambdas[i + 1], degree, rule, work) for i in range(len(lambdas) - 1)
            )
            table = Coefficients(levels, lambdas, l_at, steps, rule)
        self._remember(base_key, table)
        if key != base_key:
            table = table.to(target, dtype)
            self._remember(key, table)
        return table

    def _remember(self, key: tuple, table: Coefficients) -> None:
        self._cache[key] = table
        self._cache.move_to_end(key)
        while len(self._cache) > 1 and sum(t.nbytes for t in self._cache.values()) > _CACHE_BYTES:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Drop the memoised coefficient tables (they are rebuilt on demand)."""
        self._cache.clear()

    def is_degenerate(self) -> bool:
        """Whether these are the degenerate EMS ``l = 1, s = b = 0`` (DPM-Solver++), whatever their grid.

        Then every integral has a closed form (DPM-Solver-v3 uses it instead of a table). Checked
        once on the values and remembered.
        """
        if self._degenerate is None:
            self._degenerate = bool((self._l == 1.0).all() and not self._s.any() and not self._b.any())
        return self._degenerate

    def _step(
        self, lam_a: float, lam_b: float, degree: int, rule: str, device: torch.device
    ) -> StepCoefficients:
        pa, pb = self._position(lam_a), self._position(lam_b)
        first, last = math.floor(pa) + 1, math.ceil(pb) - 1  # grid levels strictly inside the step
        inner = self._lambda_start + torch.arange(first, last + 1, dtype=torch.float64) * self._h
        if last == self.intervals:
            inner[-1] = self._lambda_end
        u = torch.cat(
            [torch.tensor([lam_a], dtype=torch.float64), inner, torch.tensor([lam_b], dtype=torch.float64)]
        )
        start, end = self.at(lam_a), self.at(lam_b)
        l, s, b = (
            torch.cat([start[k].unsqueeze(0), arr[first : last + 1], end[k].unsqueeze(0)]).to(device)
            for k, arr in enumerate((self._l, self._s, self._b))
        )
        out = step_integrals(u.to(device), l, s, b, degree, rule)
        return StepCoefficients(
            out["decay"],
            out["s_gain"],
            out["b_gain"],
            out["bias"],  # type: ignore[arg-type]
            tuple(out["phi"]),
        )  # type: ignore[arg-type]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], *, dtype: str = "float64") -> None:
        """Write an ``.npz`` (arrays ``l, s, b`` and JSON metadata); read it with :meth:`load`.

        Args:
            path: the file to write (atomically).
            dtype: ``"float64"`` (exact) or ``"float32"``: half the size (an analytic EMS at
                ``d = 12,288`` with 1200 intervals: 354 MB -> 177 MB); the loaded statistics are the
                float32-rounded values (relative change <= 6e-8 per entry; docs/ems.md#files
                measures the effect on a run). Files of either kind load with every version of
                :meth:`load`: the format is the same.

        Raises:
            ValueError: ``dtype`` is neither, or a value overflows float32.
        """
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")
        meta = {
            "sigma_min": self._sigma_min,
            "sigma_max": self._sigma_max,
            "intervals": self.intervals,
            "shape": list(self.shape),
            "samples": self.samples,
            "source": self.source,
            "metadata": self.metadata,
        }
        arrays = {}
        for name, values in (("l", self._l), ("s", self._s), ("b", self._b)):
            with np.errstate(over="ignore"):  # checked just below, with the fix
                arrays[name] = values.numpy().astype(dtype, copy=False)
            if not np.isfinite(arrays[name]).all():
                raise ValueError(
                    f"EMS {name} overflows {dtype} (largest |value| {float(values.abs().max()):.3g}); "
                    "save with dtype='float64'."
                )
        write_npz(path, FORMAT, FORMAT_VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EMS:
        """Read EMS written by :meth:`save`. Never unpickles.

        Raises:
            ValueError: if the file is not a gaussport EMS file or is inconsistent.
        """
        hint = (
            " (an .npz written by EMS.save); read the reference implementation's l.npz/sb.npz "
            "with EMS.from_official."
        )
        meta, arrays = read_npz(
            path,
            FORMAT,
            FORMAT_VERSION,
            what="EMS",
            hint=hint,
            fields={"sigma_min": (float, int), "sigma_max": (float, int)},
            arrays={"l": Array(), "s": Array(), "b": Array()},
        )
        try:
            ems = cls(
                arrays["l"],
                arrays["s"],
                arrays["b"],
                sigma_min=meta["sigma_min"],
                sigma_max=meta["sigma_max"],
                samples=meta.get("samples"),
                source=meta.get("source", ""),
                metadata=meta.get("metadata"),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)!r} is inconsistent: {exc}") from exc
        if list(ems.shape) != list(meta.get("shape", ems.shape)) or ems.intervals != meta.get(
            "intervals", ems.intervals
        ):
            raise ValueError(
                f"{os.fspath(path)!r} is inconsistent: arrays of shape {tuple(ems.l.shape)} but "
                f"metadata says {meta.get('intervals')} intervals of shape {meta.get('shape')}."
            )
        return ems


def _check_intervals(intervals: int) -> None:
    if not isinstance(intervals, int) or isinstance(intervals, bool) or intervals < 1:
        raise ValueError(
            "intervals must be a positive integer (the EMS grid has intervals + 1 levels); "
            f"got {intervals!r}."
        )
