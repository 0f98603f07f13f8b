"""How much of the model's score (or velocity) an analytic model explains, per noise level.

For a model ``D`` and analytic models ``D_m`` (the warm-start Gaussian, a Gaussian mixture, the
training set as a delta mixture: anything ``D_m(x, sigma) -> x0``), on on-marginal probes
``x = x0 + sigma * eps`` (``x0`` rows of the data):

* ``1 - EV_s``: the score-space fraction of unexplained variance, the mean over probes of
  ``|s - s_m|^2 / |s|^2`` with ``s = (D - x) / sigma^2``. It equals the squared relative velocity
  error ``|D - D_m|^2 / |x - D|^2`` of the PF-ODE velocity ``(x - D) / sigma``
  (docs/choosing.md#explained-variance-per-noise-level derives it);
* the relative velocity error ``|D - D_m| / |x - D|`` (its per-probe square root): mean and a
  percentile; the mean is :func:`gaussport.evaluation.velocity_error` and the quantity
  :func:`gaussport.evaluation.safe_level` thresholds;
* the denoiser-space ``1 - EV_D``: the mean of ``|D - D_m|^2 / |D|^2`` (uncentred, so it depends on
  the data's mean; reported for comparison with the published figures).

One model call per probe and level, shared by every analytic model; no sampling and no reference
solve. :func:`plot_explained_variance` draws the curves (log-log) with the threshold, the safe level
and an automatically chosen level marked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .._checks import as_int
from ..denoiser import model_device
from ..tuning.probes import denoise_probes
from .analysis import safe_level
from .reporting import _pyplot, _save_figure

__all__ = ["DEFAULT_LEVELS", "ExplainedVariance", "explained_variance", "plot_explained_variance"]

DEFAULT_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)

Levels = tuple[float, ...]


@dataclass(frozen=True)
class ExplainedVariance:
    """The per-level statistics of :func:`explained_variance`, one tuple per analytic model.

    Attributes:
        levels: the noise levels, increasing.
        unexplained: ``{name: 1 - EV_s per level}``, the mean over probes of
            ``|D - D_m|^2 / |x - D|^2`` (score space = squared relative velocity error).
        unexplained_percentile: ``{name: per level}``, the ``percentile``-th percentile over probes of
            the same ratio.
        velocity_error: ``{name: per level}``, the mean over probes of ``|D - D_m| / |x - D|``.
        denoiser_unexplained: ``{name: per level}``, the mean over probes of ``|D - D_m|^2 / |D|^2``.
        percentile: the percentile reported, in [0, 100].
        probes: probes per level.
        seed: the seed of the probes' data rows and noise.
    """

    levels: Levels
    unexplained: Mapping[str, Levels]
    unexplained_percentile: Mapping[str, Levels]
    velocity_error: Mapping[str, Levels]
    denoiser_unexplained: Mapping[str, Levels]
    percentile: float
    probes: int
    seed: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> tuple[str, ...]:
        """The analytic models' names, in the order given."""
        return tuple(self.unexplained)

    def explained(self, name: str) -> Levels:
        """``EV_s`` per level of model ``name``: ``1 - unexplained[name]``."""
        return tuple(1.0 - v for v in self._of(self.unexplained, name))

    def velocity_error_percentile(self, name: str) -> Levels:
        """The ``percentile``-th percentile of the relative velocity error per level (the square root of
        ``unexplained_percentile``: the percentile commutes with the monotone square root)."""
        return tuple(math.sqrt(v) for v in self._of(self.unexplained_percentile, name))

    def safe_level(self, name: str, tau: float = 3e-3) -> float:
        """The lowest level from which on, upwards, model ``name``'s mean relative velocity error stays
        at or below ``tau`` (:func:`gaussport.evaluation.safe_level`); ``inf`` if none does."""
        return safe_level(dict(zip(self.levels, self._of(self.velocity_error, name), strict=True)), tau)

    def _of(self, table: Mapping[str, Levels], name: str) -> Levels:
        if name not in table:
            raise ValueError(f"no analytic model named {name!r}; the models are {list(self.models)}.")
        return table[name]

    def rows(self) -> list[list[Any]]:
        """Table rows ``[sigma, then per model: 1 - EV_s, velocity error mean, percentile]``."""
        out: list[list[Any]] = []
        for i, level in enumerate(self.levels):
            row: list[Any] = [level]
            for name in self.models:
                row += [
                    self.unexplained[name][i],
                    self.velocity_error[name][i],
                    self.velocity_error_percentile(name)[i],
                ]
            out.append(row)
        return out

    def header(self) -> list[str]:
        """The column names of :meth:`rows`."""
        p = f"p{self.percentile:g}"
        return ["sigma"] + [
            f"{name} {what}" for name in self.models for what in ("1-EV_s", "vel. err.", f"vel. err. {p}")
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON values: the levels, the settings and every statistic per model."""
        return {
            "levels": list(self.levels),
            "percentile": self.percentile,
            "probes": self.probes,
            "seed": self.seed,
            "metadata": dict(self.metadata),
            "models": {
                name: {
                    "unexplained_score": list(self.unexplained[name]),
                    "unexplained_score_percentile": list(self.unexplained_percentile[name]),
                    "velocity_error": list(self.velocity_error[name]),
                    "velocity_error_percentile": list(self.velocity_error_percentile(name)),
                    "unexplained_denoiser": list(self.denoiser_unexplained[name]),
                }
                for name in self.models
            },
        }


def _levels(levels: Iterable[float]) -> Levels:
    try:
        chosen = sorted(float(v) for v in levels)
    except (TypeError, ValueError):
        raise TypeError(f"levels must be an iterable of numbers, e.g. {list(DEFAULT_LEVELS[:3])}.") from None
    if not chosen or any(not (v > 0.0 and math.isfinite(v)) for v in chosen):
        raise ValueError(f"levels must be positive finite noise levels (at least one); got {chosen}.")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"levels must be distinct; got {chosen}.")
    return tuple(chosen)


def _probe_rows(n: int, probes: int, gen: torch.Generator) -> Tensor:
    """``probes`` row indices: random permutations of ``0..n-1`` laid end to end (every row once before
    any row twice)."""
    perms = [torch.randperm(n, generator=gen) for _ in range(-(-probes // n))]
    return torch.cat(perms)[:probes]


def explained_variance(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    models: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    data: Tensor,
    levels: Iterable[float] = DEFAULT_LEVELS,
    *,
    probes: int = 256,
    seed: int = 0,
    percentile: float = 90.0,
    batch_size: int = 256,
    model_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    disable: bool | None = True,
) -> ExplainedVariance:
    """The fraction of the model's score variance each analytic model leaves unexplained, per level.

    Probes: ``probes`` rows of ``data`` (random permutations of the rows laid end to end), the same
    rows at every level, each with fresh noise ``x = x0 + sigma * eps``; one generator seeded with
    ``seed`` draws the rows and then the noise level by level (increasing). Probes and the analytic
    models run in float64 on the CPU; ``denoiser`` in ``model_dtype`` on ``device``.

    Order: ``probes * len(levels)`` model calls (in batches of ``batch_size``) plus as many calls of
    each analytic model; memory ``O(batch_size * d)``. Reference: the score-space explained variance
    of Wang & Vastola's Gaussian-score analysis, with the per-probe ratio averaged over probes.

    Args:
        denoiser: the model ``D(x, sigma) -> x0``.
        models: ``{name: D_m}``: analytic denoisers (:class:`gaussport.analytic.Gaussian`,
            :class:`~gaussport.analytic.GaussianMixture`, :class:`~gaussport.analytic.EmpiricalMixture`
            or any callable of the same protocol).
        data: ``[N, *sample_shape]`` clean samples the probes start from (held-out data shows what
            the model generalises; training data what it memorises).
        levels: the noise levels (sorted increasing in the result).
        probes: probes per level.
        seed: seed of the probe rows and noise.
        percentile: the percentile of the per-probe ratio reported beside the mean, in [0, 100].
        batch_size: probes per model call.
        model_dtype: the dtype the model runs in.
        device: where the model runs; default the device of its parameters, else the CPU.
        disable: hide the progress bar (``None``: hide it when not on a terminal).

    Raises:
        TypeError: models that are not a mapping of names to callables; levels that are not numbers.
        ValueError: no models, no levels or a level <= 0, empty data, ``probes < 1``,
            ``batch_size < 1`` or a percentile outside [0, 100].
    """
    from tqdm.auto import tqdm

    if not isinstance(models, Mapping) or not all(
        isinstance(k, str) and callable(v) for k, v in models.items()
    ):
        raise TypeError("models must be a mapping {name: analytic denoiser}, e.g. {'gaussian': gaussian}.")
    if not models:
        raise ValueError("models is empty; give at least one analytic model, e.g. {'gaussian': gaussian}.")
    chosen = _levels(levels)
    probes = as_int(probes, "probes", minimum=1)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    seed = as_int(seed, "seed", minimum=0)
    q = float(percentile)
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], e.g. 90; got {percentile}.")
    if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(
            "data must be a tensor [N, *sample_shape] with N >= 1 clean samples; got "
            f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}."
        )
    where = torch.device(device) if device is not None else model_device(denoiser)
    gen = torch.Generator().manual_seed(seed)
    x0 = data.detach().to("cpu", torch.float64)[_probe_rows(data.shape[0], probes, gen)]
    score: dict[str, list[Tensor]] = {name: [] for name in models}
    denoised: dict[str, list[Tensor]] = {name: [] for name in models}
    bar = tqdm(total=probes * len(chosen), desc="probes", unit="probe", disable=disable)
    with torch.no_grad():
        for level in chosen:
            noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            ratios_s: dict[str, list[Tensor]] = {name: [] for name in models}
            ratios_d: dict[str, list[Tensor]] = {name: [] for name in models}
            for start in range(0, probes, batch_size):
                x = x0[start : start + batch_size] + level * noise[start : start + batch_size]
                sigma, d = denoise_probes(denoiser, x, level, model_dtype=model_dtype, where=where)
                velocity = (x - d).flatten(1).square().sum(1)  # sigma^2 |v|^2 = sigma^4 |s|^2
                size = d.flatten(1).square().sum(1)
                for name, model in models.items():
                    gap = (d - model(x, sigma).to("cpu", torch.float64)).flatten(1).square().sum(1)
                    ratios_s[name].append(gap / velocity)
                    ratios_d[name].append(gap / size)
                bar.update(x.shape[0])
            for name in models:
                score[name].append(torch.cat(ratios_s[name]))
                denoised[name].append(torch.cat(ratios_d[name]))
    bar.close()

    def per_level(table: dict[str, list[Tensor]], stat: Callable[[Tensor], Tensor]) -> dict[str, Levels]:
        return {name: tuple(float(stat(r)) for r in rows) for name, rows in table.items()}

    return ExplainedVariance(
        levels=chosen,
        unexplained=per_level(score, torch.mean),
        unexplained_percentile=per_level(score, lambda r: torch.quantile(r, q / 100.0)),
        velocity_error=per_level(score, lambda r: r.sqrt().mean()),
        denoiser_unexplained=per_level(denoised, torch.mean),
        percentile=q,
        probes=probes,
        seed=seed,
    )


def plot_explained_variance(
    result: ExplainedVariance,
    path: str | os.PathLike[str],
    *,
    tau: float | None = 3e-3,
    safe: float | None = None,
    auto: float | None = None,
    auto_label: str = "auto level",
    title: str = "",
) -> bool:
    """``1 - EV`` (score and denoiser space) and the relative velocity error per model against sigma.

    Two log-log panels: left the score-space ``1 - EV_s`` (solid) and the denoiser-space ``1 - EV_D``
    (dotted) per model; right the relative velocity error's mean (solid) and percentile (dashed) with
    the threshold ``tau`` (horizontal), the safe level ``safe`` and the automatically chosen level
    ``auto`` (vertical lines; ``None`` or ``inf``: not drawn).

    Returns:
        False (and logs why) when matplotlib is missing, else True.
    """
    plt = _pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    levels = list(result.levels)
    for k, name in enumerate(result.models):
        c = colours[k % len(colours)]
        left.loglog(levels, result.unexplained[name], "o-", ms=3, color=c, label=f"{name}: score space")
        left.loglog(levels, result.denoiser_unexplained[name], ":", color=c, label=f"{name}: denoiser space")
        right.loglog(levels, result.velocity_error[name], "o-", ms=3, color=c, label=f"{name}: mean")
        right.loglog(
            levels,
            result.velocity_error_percentile(name),
            "--",
            color=c,
            label=f"{name}: {result.percentile:g}th percentile",
        )
    left.set_ylabel("1 - explained variance (mean over probes)")
    right.set_ylabel("relative velocity error |D - D_m| / |x - D|")
    if tau is not None:
        right.axhline(tau, color="grey", lw=1, ls="-.", label=f"tau = {tau:g}")
    for value, style, label in ((safe, "-", "safe level"), (auto, "--", auto_label)):
        if value is not None and math.isfinite(value):
            left.axvline(value, color="black", lw=1.2, ls=style)
            right.axvline(value, color="black", lw=1.2, ls=style, label=f"{label} {value:.3g}")
    for ax in (left, right):
        ax.set_xlabel("noise level sigma")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save_figure(plt, fig, path, title)
    return True
