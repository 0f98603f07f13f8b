"""The warm start's velocity error per noise level, measured on probes and cached per model.

* :func:`velocity_error` -- the mean relative velocity error ``|D - D_G| / |x - D|`` per level
  (moved here from :mod:`gaussport.evaluation.analysis`, which re-exports it);
* :class:`ProbeRecord` -- the per-level statistics of one probe run (relative error mean and 90th
  percentile, absolute error RMS), the fingerprints of the model and statistics, small JSON file;
* :func:`probe` -- measures a record, or reads it from the file cache keyed by (model fingerprint,
  statistics fingerprint, probe settings);
* :class:`Surrogate` / :func:`fit_surrogate` -- with data, a diagonal Gaussian mixture fitted to it
  (k-means, K = 10, zero model calls), its ``|D_M - D_G|`` on the same probes, and per probe level
  the affine part of the model's departure from the mixture (a shift and two gains, least squares
  on the probes): what the auto level runs its sweep on (docs/auto-level.md#the-surrogate).

Where the probes come from matters (docs/auto-level.md#probes): from ``data`` the probes are
``x0 + sigma * eps`` with ``x0`` real data rows, the marginal the model was trained on; without data
they are drawn from the warm start's own marginal ``N(mu, Sigma + sigma^2 I)``, which is exact at
high noise and, at low noise, asks the model about Gaussian-looking images it may never have seen
(the error there is larger than on data: the auto level then errs towards teleporting less far).

Cost: one model call per probe and level (``probes * len(levels)`` single-sample evaluations, in
batches of ``probes``); the default 16 probes x 12 levels = 192 is 5% of sampling 1,000 samples at
NFE 4 (:data:`PROBE_BUDGET_PER_NFE`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._files import atomic_writer, finite_json
from ..denoiser import model_device

__all__ = [
    "ProbeRecord",
    "Surrogate",
    "fit_surrogate",
    "fit_departure",
    "departure",
    "probe",
    "velocity_error",
    "denoise_probes",
    "default_cache_dir",
    "fingerprint_model",
    "fingerprint_statistics",
    "DEFAULT_LEVELS",
    "PROBE_BUDGET_PER_NFE",
]

logger = logging.getLogger("gaussport")

FORMAT = "gaussport.probe-record/2"

DEFAULT_LEVELS: tuple[float, ...] = tuple(float(f"{80.0 * (0.05 / 80.0) ** (k / 11):.6g}") for k in range(12))
"""12 levels, geometric from 80 down to 0.05 (the range a VE model with sigma_max = 80 teleports in)."""

PROBE_BUDGET_PER_NFE = 50
"""A probe may cost at most 50 single-sample evaluations per NFE of the budget: 5% of sampling 1,000
samples at that NFE (200 at NFE 4)."""


def denoise_probes(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    level: float,
    *,
    model_dtype: torch.dtype,
    where: torch.device,
) -> tuple[Tensor, Tensor]:
    """``(sigma, D(x, sigma))`` for float64 CPU probes ``x`` at one noise level: the model runs in
    ``model_dtype`` on ``where``; ``sigma`` and the result are float64 on the CPU (the probes'
    dtype, in which the warm start and the ratios are computed). One model call."""
    sigma = torch.full((x.shape[0],), level, dtype=torch.float64)
    d = denoiser(x.to(where, model_dtype), sigma.to(where, model_dtype)).to("cpu", torch.float64)
    return sigma, d


def velocity_error(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    gaussian: Callable[[Tensor, Tensor], Tensor],
    data: Tensor,
    levels: Iterable[float],
    *,
    repeats: int = 1,
    seed: int = 0,
    model_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[float, float]:
    """The warm start's relative velocity error per noise level.

    For probes ``x = x0 + sigma * eps`` (``x0`` the rows of ``data``, ``repeats`` noise draws each,
    one generator seeded with ``seed`` for all levels in the order given) it returns the mean over
    probes of ``|D(x) - D_G(x)| / |x - D(x)|``: the relative error of the PF-ODE velocity
    ``(x - D) / sigma`` when the Gaussian's denoiser ``D_G`` replaces the model's ``D`` (equal to
    ``sqrt(1 - EV)`` of the score). Where it is
    small the model's flow is the Gaussian's, so a teleport to that level costs almost nothing
    (docs/choosing.md#choosing-sigma_skip, step 1). It needs one model call per probe and level, no
    sampling and no reference solve. Probes and ``D_G`` are float64 on the CPU; the model runs in
    ``model_dtype`` on ``device``.

    Raises:
        ValueError: for no levels, a level <= 0, ``repeats < 1`` or empty ``data``.
    """
    chosen = _checked_levels(levels)
    if repeats < 1 or data.shape[0] == 0:
        raise ValueError(f"need at least one data row and repeats >= 1; got {data.shape[0]} rows, {repeats}.")
    x0 = data.detach().to("cpu", torch.float64).repeat(repeats, *([1] * (data.dim() - 1)))
    gen = torch.Generator().manual_seed(int(seed))
    where = torch.device(device) if device is not None else model_device(denoiser)
    out: dict[float, float] = {}
    with torch.no_grad():
        for level in chosen:
            x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            sigma, d = denoise_probes(denoiser, x, level, model_dtype=model_dtype, where=where)
            d_g = gaussian(x, sigma).to("cpu", torch.float64)
            ratio = (d - d_g).flatten(1).norm(dim=1) / (x - d).flatten(1).norm(dim=1)
            out[level] = float(ratio.mean())
    return out


def _checked_levels(levels: Iterable[float]) -> list[float]:
    chosen = [float(v) for v in levels]
    if not chosen or any(not (v > 0.0 and math.isfinite(v)) for v in chosen):
        raise ValueError(f"levels must be positive finite noise levels (at least one); got {chosen}.")
    return chosen


def fingerprint_model(model: Any) -> str | None:
    """A SHA-256 of ``model``'s state dict (names, shapes, dtypes, values); ``None`` without one.

    The same rule as :func:`gaussport.evaluation.endpoints.fingerprint` (layer 3, not importable here).
    """
    state = getattr(model, "state_dict", None)
    if not callable(state):
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(state().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_statistics(warm_start: Any) -> str | None:
    """A SHA-256 of a warm start's tensors (a Gaussian's mean and covariance factors); ``None`` if none."""
    digest = hashlib.sha256()
    found = False
    for prefix, obj in (("", warm_start), ("cov.", getattr(warm_start, "cov", None))):
        if obj is None or not hasattr(obj, "__dict__"):
            continue
        for name, value in sorted(vars(obj).items()):
            if isinstance(value, Tensor):
                t = value.detach().to("cpu", torch.float64).contiguous()
                digest.update(f"{prefix}{name}:{tuple(t.shape)}".encode())
                digest.update(t.numpy().tobytes())
                found = True
    return digest.hexdigest() if found else None


def _data_fingerprint(data: Tensor) -> str:
    t = data.detach().to("cpu", torch.float64).contiguous()
    return hashlib.sha256(f"{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()


def _finite_list(value: Any, name: str, where: str, *, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {name!r} must be a non-empty list of numbers.")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {name!r} holds {v!r}, not a finite number.")
        if v < 0 or (positive and v <= 0):
            raise ValueError(f"{where}: {name!r} holds {v!r}; it must be {'> 0' if positive else '>= 0'}.")
        out.append(float(v))
    return tuple(out)


SURROGATE_COMPONENTS = 10
"""Clusters of the data-fitted surrogate (:class:`Surrogate`): k-means on the probe data."""


@dataclass(frozen=True)
class Surrogate:
    """A diagonal Gaussian mixture fitted to the probe data, and the model's affine departure from it
    per probe level: the stand-in for the model's flow (docs/auto-level.md#the-surrogate).

    ``sample_shape`` is the shape of one sample, ``weights`` the K mixture weights, ``means`` and
    ``variances`` K flattened mean vectors and K diagonal covariances, ``rms`` the RMS of
    ``|D_M - D_G|`` per probe level on the same probes as the record's ``absolute_rms``.
    ``shifts`` (one flattened vector per probe level) and ``gains`` (``(g0, g1)`` per level) are the
    least-squares fit ``D - D_M ~ shift + g0 (x - mu) + g1 Sigma (Sigma + sigma^2 I)^-1 (x - mu)`` on
    the probes (:func:`fit_departure`); both empty when the probe did not fit them
    (``probe(..., departure=False)``, or a warm start that is not a Gaussian).
    """

    sample_shape: tuple[int, ...]
    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    variances: tuple[tuple[float, ...], ...]
    rms: tuple[float, ...]
    shifts: tuple[tuple[float, ...], ...] = ()
    gains: tuple[tuple[float, float], ...] = ()

    def mixture(self) -> Any:
        """The :class:`~gaussport.analytic.GaussianMixture` (float64, diagonal components)."""
        from ..analytic import Diagonal, Gaussian, GaussianMixture

        comps = [
            Gaussian(
                torch.tensor(m, dtype=torch.float64).reshape(self.sample_shape),
                Diagonal(torch.tensor(v, dtype=torch.float64)),
            )
            for m, v in zip(self.means, self.variances, strict=True)
        ]
        return GaussianMixture(comps, torch.tensor(self.weights, dtype=torch.float64))

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_shape": list(self.sample_shape),
            "weights": list(self.weights),
            "means": [list(m) for m in self.means],
            "variances": [list(v) for v in self.variances],
            "rms": list(self.rms),
            "shifts": [list(v) for v in self.shifts],
            "gains": [list(g) for g in self.gains],
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Surrogate:
        keys = {"sample_shape", "weights", "means", "variances", "rms", "shifts", "gains"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError(
                f"{where}: 'surrogate' must be null or an object with keys sample_shape, weights, "
                "means, variances, rms, shifts, gains."
            )
        shape = data["sample_shape"]
        if not isinstance(shape, list) or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"{where}: surrogate 'sample_shape' must be a list of positive integers.")
        for name in ("means", "variances", "shifts", "gains"):
            if not isinstance(data[name], list):
                raise ValueError(f"{where}: surrogate {name!r} must be a list of lists.")
        gains = tuple(_signed_list(g, "surrogate gains", where) for g in data["gains"])
        if any(len(g) != 2 for g in gains):
            raise ValueError(f"{where}: surrogate 'gains' must hold two numbers per level.")
        return cls(
            sample_shape=tuple(shape),
            weights=_finite_list(data["weights"], "surrogate weights", where, positive=True),
            means=tuple(_signed_list(m, "surrogate means", where) for m in data["means"]),
            variances=tuple(
                _finite_list(v, "surrogate variances", where, positive=True) for v in data["variances"]
            ),
            rms=_finite_list(data["rms"], "surrogate rms", where),
            shifts=tuple(_signed_list(v, "surrogate shifts", where) for v in data["shifts"]),
            gains=tuple((g[0], g[1]) for g in gains),
        )


def _signed_list(value: Any, name: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {name!r} must be a non-empty list of numbers.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise ValueError(f"{where}: {name!r} must hold finite numbers.")
    return tuple(float(v) for v in value)


def fit_surrogate(
    data: Tensor, *, components: int = SURROGATE_COMPONENTS, seed: int = 0, max_rows: int = 2048
) -> Surrogate:
    """K-means (:func:`gaussport.analytic.mixture.kmeans`) with a diagonal Gaussian per cluster.

    At most ``max_rows`` rows (drawn with ``seed``) are clustered. Each variance gets a floor of
    ``1e-3`` times the data's mean variance, so that no component is a point mass. Order:
    ``O(iterations N K d)``; no model call. ``rms`` is left empty (filled by :func:`probe`).
    """
    from ..analytic.mixture import kmeans

    v = data.detach().to("cpu", torch.float64).flatten(1)
    if v.shape[0] > max_rows:
        v = v[torch.randperm(v.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:max_rows]]
    k = max(1, min(int(components), v.shape[0]))
    _, labels = kmeans(v, k, generator=torch.Generator().manual_seed(int(seed)))
    floor = 1e-3 * float(v.var(0, unbiased=False).mean().clamp_min(1e-12))
    weights, means, variances = [], [], []
    for c in range(k):
        rows = v[labels == c]
        if rows.shape[0] == 0:
            continue
        weights.append(float(rows.shape[0]))
        means.append(tuple(rows.mean(0).tolist()))
        variances.append(tuple((rows.var(0, unbiased=False) + floor).tolist()))
    return Surrogate(tuple(data.shape[1:]), tuple(weights), tuple(means), tuple(variances), ())


def fit_departure(warm_start: Any, x: Tensor, difference: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """Least-squares affine fit of a model's departure ``r = D - D_M`` on probes ``x`` at one level.

    The fit is ``r ~ shift + g0 (x - mu) + g1 H (x - mu)`` with ``H = Sigma (Sigma + sigma^2 I)^-1``
    the warm start's own denoising gain: a model that denoises like a Gaussian with a misjudged mean
    and covariance scale departs in this form, and at high noise the digits network's departure is
    mostly affine (docs/auto-level.md#the-surrogate). Two gains, not one per direction, so that 16
    probes determine them; with collinear columns (one probe, an isotropic ``Sigma``) the
    minimum-norm solution. Order ``O(P d)`` plus two products with ``Sigma`` (``cov.apply``).

    Args:
        warm_start: the :class:`~gaussport.analytic.Gaussian` (``mean``, ``cov``).
        x: the probes ``[P, *shape]`` (float64).
        difference: ``r`` at the probes, same shape.
        sigma: the level.

    Returns:
        ``(shift [d], gains [2])``, float64.
    """
    v = x.reshape(x.shape[0], -1).to(torch.float64)
    r = difference.reshape(v.shape).to(torch.float64)
    vc, rc = v - v.mean(0, keepdim=True), r - r.mean(0, keepdim=True)
    hc = _held(warm_start, vc, sigma)
    cols = (vc, hc)
    normal = torch.tensor([[float((a * b).sum()) for b in cols] for a in cols], dtype=torch.float64)
    rhs = torch.tensor([float((a * rc).sum()) for a in cols], dtype=torch.float64)
    gains = torch.linalg.pinv(normal, rtol=1e-10) @ rhs
    no_shift = torch.zeros(v.shape[1], dtype=torch.float64)
    fitted = departure(warm_start, v.mean(0, keepdim=True), no_shift, gains, sigma)
    return (r.mean(0, keepdim=True) - fitted).reshape(-1), gains


def departure(
    warm_start: Any, x: Tensor, shift: Tensor, gains: Tensor | Sequence[float], sigma: float
) -> Tensor:
    """The fitted departure ``shift + g0 (x - mu) + g1 H_sigma (x - mu)`` at ``x`` (float64, x's shape)."""
    centred = x.reshape(x.shape[0], -1).to(torch.float64) - warm_start.mean.reshape(1, -1).to(torch.float64)
    g0, g1 = (float(g) for g in gains)
    return (shift.to(torch.float64) + g0 * centred + g1 * _held(warm_start, centred, sigma)).reshape(x.shape)


def _held(warm_start: Any, v: Tensor, sigma: float) -> Tensor:
    """``H_sigma v = Sigma (Sigma + sigma^2 I)^-1 v`` for flattened rows ``v`` (the warm start's
    denoising gain; one product with its covariance)."""
    s2 = float(sigma) ** 2
    return warm_start.cov.apply(v, lambda lam: lam / (lam + s2))


@dataclass(frozen=True)
class ProbeRecord:
    """What :func:`probe` measured: the warm start's velocity error per noise level.

    Attributes:
        levels: the noise levels, strictly decreasing.
        relative_mean: mean over probes of ``|D - D_G| / |x - D|`` per level.
        relative_p90: the 90th percentile of the same ratio per level.
        absolute_rms: the RMS over probes of ``|D - D_G|`` (the per-sample L2 norm) per level: what the
            teleport's state error is integrated from (docs/auto-level.md#the-teleport-error).
        probes: probes per level.
        seed: the probes' seed.
        source: ``"data"`` (``x0 + sigma * eps``) or ``"gaussian"`` (the warm start's marginal).
        model: the model's fingerprint (:func:`fingerprint_model`) or ``None``.
        statistics: the warm start's fingerprint (:func:`fingerprint_statistics`) or ``None``.
        evaluations: the single-sample model evaluations the record cost.
        surrogate: with data, the :class:`Surrogate` fitted to it (zero model calls), else ``None``.
    """

    levels: tuple[float, ...]
    relative_mean: tuple[float, ...]
    relative_p90: tuple[float, ...]
    absolute_rms: tuple[float, ...]
    probes: int
    seed: int
    source: str
    model: str | None = None
    statistics: str | None = None
    evaluations: int = 0
    surrogate: Surrogate | None = None

    def __post_init__(self) -> None:
        problem = _record_problem(self)
        if problem is not None:
            raise ValueError(f"invalid probe record: {problem}.")

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values (the file's content)."""
        return {
            "format": FORMAT,
            "levels": list(self.levels),
            "relative_mean": list(self.relative_mean),
            "relative_p90": list(self.relative_p90),
            "absolute_rms": list(self.absolute_rms),
            "probes": self.probes,
            "seed": self.seed,
            "source": self.source,
            "model": self.model,
            "statistics": self.statistics,
            "evaluations": self.evaluations,
            "surrogate": None if self.surrogate is None else self.surrogate.to_json(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the record as JSON (atomically: a failed write leaves ``path`` as it was)."""
        with atomic_writer(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    @classmethod
    def from_json(cls, data: Any, *, source: str = "probe record") -> ProbeRecord:
        """The record from JSON values, validated; ValueError naming ``source`` and the problem."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: 'format' must be {FORMAT!r}; got {data.get('format')!r}.")
        expected = set(cls.__dataclass_fields__) | {"format"}
        unknown = set(data) - expected
        missing = expected - set(data) - {"surrogate"}  # optional: records written before it existed
        if unknown or missing:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}.")
        for name in ("probes", "seed", "evaluations"):
            v = data[name]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{source}: {name!r} must be an integer; got {v!r}.")
        for name in ("model", "statistics"):
            if data[name] is not None and not isinstance(data[name], str):
                raise ValueError(f"{source}: {name!r} must be a string or null; got {data[name]!r}.")
        if not isinstance(data["source"], str):
            raise ValueError(f"{source}: 'source' must be a string; got {data['source']!r}.")
        try:
            return cls(
                levels=_finite_list(data["levels"], "levels", source, positive=True),
                relative_mean=_finite_list(data["relative_mean"], "relative_mean", source),
                relative_p90=_finite_list(data["relative_p90"], "relative_p90", source),
                absolute_rms=_finite_list(data["absolute_rms"], "absolute_rms", source),
                probes=data["probes"],
                seed=data["seed"],
                source=data["source"],
                model=data["model"],
                statistics=data["statistics"],
                evaluations=data["evaluations"],
                surrogate=None
                if data.get("surrogate") is None
                else Surrogate.from_json(data["surrogate"], source),
            )
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProbeRecord:
        """Read and validate a record written by :meth:`save` (JSON; nothing is unpickled).

        Raises:
            ValueError: the file is not valid JSON or not a valid record (the message names the file).
            FileNotFoundError: no such file.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = finite_json(text)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{os.fspath(path)}: not a probe record (invalid JSON: {err}).") from None
        return cls.from_json(data, source=os.fspath(path))


def _record_problem(record: ProbeRecord) -> str | None:
    n = len(record.levels)
    if n == 0:
        return "no levels"
    if any(not (v > 0 and math.isfinite(v)) for v in record.levels):
        return f"levels must be positive and finite; got {record.levels}"
    if any(a <= b for a, b in zip(record.levels[:-1], record.levels[1:], strict=True)):
        return f"levels must be strictly decreasing; got {record.levels}"
    for name in ("relative_mean", "relative_p90", "absolute_rms"):
        values = getattr(record, name)
        if len(values) != n:
            return f"{name} has {len(values)} values for {n} levels"
        if any(not (v >= 0 and math.isfinite(v)) for v in values):
            return f"{name} must hold finite values >= 0; got {values}"
    if record.probes < 1:
        return f"probes must be >= 1; got {record.probes}"
    if record.source not in ("data", "gaussian"):
        return f"source must be 'data' or 'gaussian'; got {record.source!r}"
    if record.evaluations < 0:
        return f"evaluations must be >= 0; got {record.evaluations}"
    sur = record.surrogate
    if sur is not None:
        k, d = len(sur.weights), math.prod(sur.sample_shape)
        if k == 0 or len(sur.means) != k or len(sur.variances) != k:
            return f"the surrogate needs as many means and variances as weights ({k})"
        if any(len(m) != d for m in sur.means) or any(len(v) != d for v in sur.variances):
            return f"the surrogate's means and variances must have {d} values each"
        if len(sur.rms) != n:
            return f"the surrogate's rms has {len(sur.rms)} values for {n} levels"
        sizes = (len(sur.shifts), len(sur.gains))
        if any(sizes) and sizes != (n, n):
            return (
                f"the surrogate's shifts and gains need one entry per level ({n}) or none; got "
                f"{sizes[0]} and {sizes[1]}"
            )
        if any(len(v) != d for v in sur.shifts):
            return f"the surrogate's shifts must have {d} values each"
    return None


def default_cache_dir() -> Path:
    """``$GAUSSPORT_CACHE``, else ``$XDG_CACHE_HOME/gaussport``, else ``~/.cache/gaussport``."""
    explicit = os.environ.get("GAUSSPORT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gaussport"


def _cache_file(cache: bool | str | os.PathLike[str] | None, key: dict[str, Any]) -> Path | None:
    if cache is False:
        return None
    if key["model"] is None or key["statistics"] is None:
        return None  # nothing to key the file by: a plain function or a warm start without tensors
    directory = default_cache_dir() if cache is None or cache is True else Path(cache)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return directory / "probes" / f"{name}.json"


def probe(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    warm_start: Any,
    data: Tensor | None = None,
    *,
    levels: Sequence[float] | None = None,
    probes: int = 16,
    seed: int = 0,
    cache: bool | str | os.PathLike[str] | None = None,
    model_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    departure: bool | None = None,
    surrogate_components: int = SURROGATE_COMPONENTS,
) -> ProbeRecord:
    """Measure (or read from the cache) the warm start's velocity error per noise level.

    Probes are ``x0 + sigma * eps`` with ``probes`` rows of ``data`` (drawn with ``seed``) when
    ``data`` is given, else draws of the warm start's marginal ``N(mu, Sigma + sigma^2 I)``
    (``warm_start.sample``). One model call per level on a batch of ``probes``: cost
    ``probes * len(levels)`` single-sample evaluations (logged), 192 with the defaults.

    Args:
        denoiser: the model ``D(x, sigma)``.
        warm_start: the Gaussian (``__call__(x, sigma)`` is ``D_G``; ``sample`` without data).
        data: ``[N, *shape]`` training data to probe from, or ``None``.
        levels: the noise levels (default :data:`DEFAULT_LEVELS`), any order; stored decreasing.
        probes: probes per level.
        seed: seed of the probes (data rows and noise).
        cache: ``None`` -- the default cache directory (:func:`default_cache_dir`); ``False`` -- no
            cache; a path -- that cache directory. The file is keyed by the model's and the
            statistics' fingerprints, the data's hash and the probe settings; a model without a
            state dict is never cached.
        model_dtype: the dtype the model receives.
        device: where the model runs; default the device of its parameters, else the CPU.
        departure: fit the model's affine departure from the data mixture per level
            (:func:`fit_departure`, no extra model call; ``d + 2`` numbers per level in the record).
            ``None`` (default): whenever ``data`` and a :class:`~gaussport.analytic.Gaussian` warm
            start are given; ``True``: require them; ``False``: never. ``sigma_skip="auto"`` decides
            from the record whether its sweep runs on the mixture plus that departure
            (:func:`gaussport.tuning.auto.surrogate_form`, docs/auto-level.md#which-surrogate).
        surrogate_components: the k-means clusters of the data mixture ``D_M`` (with data; at most
            the rows of ``data``). 10 by default; more measured no better on the digits
            (docs/auto-level.md#measured).

    Raises:
        ValueError: for bad levels, ``probes < 1`` or ``surrogate_components < 1``, empty data, or
            no data with a warm start that cannot ``sample``; ``departure=True`` without data or
            with a warm start that is not a Gaussian.
    """
    chosen = sorted(set(_checked_levels(DEFAULT_LEVELS if levels is None else levels)), reverse=True)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an integer >= 1; got {probes!r}.")
    if (
        isinstance(surrogate_components, bool)
        or not isinstance(surrogate_components, int)
        or surrogate_components < 1
    ):
        raise ValueError(f"surrogate_components must be an integer >= 1; got {surrogate_components!r}.")
    if data is not None and (not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] == 0):
        raise ValueError(
            "data must be a [N, *shape] tensor with at least one row (or None to probe "
            "from the warm start's own marginal)."
        )
    if data is None and not callable(getattr(warm_start, "sample", None)):
        raise ValueError(
            "probing without data needs a warm start with sample(n, sigma) "
            "(gaussport.analytic.Gaussian); pass data=... to probe from training data."
        )
    fits_departure = data is not None and hasattr(warm_start, "cov") and hasattr(warm_start, "mean")
    if departure and not fits_departure:
        raise ValueError(
            "departure=True fits the model's departure from a mixture fitted to data, in the "
            "warm start's eigenbasis: pass data=... and a gaussport.analytic.Gaussian warm start, "
            "or drop departure=True."
        )
    if departure is None:
        departure = fits_departure
    key = {
        "model": fingerprint_model(denoiser),
        "statistics": fingerprint_statistics(warm_start),
        "data": None if data is None else _data_fingerprint(data),
        "levels": chosen,
        "probes": probes,
        "seed": int(seed),
        "format": FORMAT,
        "surrogate": None if data is None else surrogate_components,
        "departure": bool(departure),
    }
    path = _cache_file(cache, key)
    if path is not None and path.is_file():
        try:
            record = ProbeRecord.load(path)
            logger.info("probe record read from %s (no model calls)", path)
            return record
        except ValueError as err:
            logger.warning("ignoring the damaged probe cache file %s: %s", path, err)
    gen = torch.Generator().manual_seed(int(seed))
    if data is not None:
        rows = torch.randint(0, data.shape[0], (probes,), generator=gen)
        x0 = data.detach().to("cpu", torch.float64)[rows]
    where = torch.device(device) if device is not None else model_device(denoiser)
    surrogate = None if data is None else fit_surrogate(data, components=surrogate_components, seed=int(seed))
    mixture = None if surrogate is None else surrogate.mixture()
    mean, p90, rms, mixture_rms, shifts, gains = [], [], [], [], [], []
    started = time.perf_counter()
    with torch.no_grad():
        for level in chosen:
            if data is not None:
                x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            else:
                x = warm_start.sample(probes, level, gen, dtype=torch.float64).to(torch.float64)
            sigma, d = denoise_probes(denoiser, x, level, model_dtype=model_dtype, where=where)
            d_g = warm_start(x, sigma).to("cpu", torch.float64)
            diff = (d - d_g).flatten(1).norm(dim=1)
            ratio = diff / (x - d).flatten(1).norm(dim=1).clamp_min(1e-300)
            mean.append(float(ratio.mean()))
            p90.append(float(torch.quantile(ratio, 0.9)))
            rms.append(float(diff.square().mean().sqrt()))
            if mixture is not None:
                d_m = mixture(x.reshape(probes, *surrogate.sample_shape), sigma).reshape(d_g.shape)
                mixture_rms.append(float((d_m - d_g).flatten(1).norm(dim=1).square().mean().sqrt()))
                if departure:  # implies data, hence a mixture (checked above)
                    shift, gain = fit_departure(warm_start, x, d - d_m, level)
                    shifts.append(tuple(shift.tolist()))
                    gains.append((float(gain[0]), float(gain[1])))
    if surrogate is not None:
        surrogate = dataclasses.replace(
            surrogate,
            rms=tuple(mixture_rms),
            shifts=tuple(shifts),
            gains=tuple(gains),
        )
    record = ProbeRecord(
        levels=tuple(chosen),
        relative_mean=tuple(mean),
        relative_p90=tuple(p90),
        absolute_rms=tuple(rms),
        probes=probes,
        seed=int(seed),
        source="data" if data is not None else "gaussian",
        model=key["model"],
        statistics=key["statistics"],
        evaluations=probes * len(chosen),
        surrogate=surrogate,
    )
    logger.info(
        "probed %d levels x %d probes = %d model evaluations in %.2f s",
        len(chosen),
        probes,
        record.evaluations,
        time.perf_counter() - started,
    )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            record.save(path)
        except OSError as err:  # a read-only cache must not stop sampling
            logger.warning("could not write the probe cache %s: %s", path, err)
    return record
