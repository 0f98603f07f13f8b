"""``sigma_skip="auto"``: the teleport level for a solver, grid and budget, without a reference solve.

The level minimises an error model ``E(s) = T(s) + S(s)`` (derived in docs/auto-level.md):

* with a probe record that carries a data-fitted :class:`~gaussport.tuning.probes.Surrogate`
  (probed from data): the sweep itself, run on a surrogate denoiser, and ``S(s)`` the teleported
  solver's distance to the surrogate's own reference solve from the same draws. The surrogate takes
  one of two forms, chosen from the record by :func:`surrogate_form`:

  - ``"departure"`` where the model departs from its Gaussian by at least twice as much as the data
    mixture ``D_M`` does (median over the upper half of the probe levels; a trained network's own
    high-noise error): ``D_s = D_M + shift + g0 (x - mu) + g1 H_sigma (x - mu)``, the mixture plus
    the model's affine departure from it (least squares on the probes per level), on 64 draws, and
    ``T = 0``;
  - ``"mixture"`` otherwise (a model close to the data's own structure):
    ``D_s = D_G + beta(sigma) (D_M - D_G)`` with ``beta = min(1, |D - D_G| / |D_M - D_G|)`` per
    probe level, on 16 draws, and ``T(s)`` the model's first-order teleport error (below);

* without one, on the warm-start Gaussian alone (``"gaussian"``): ``T(s)``, the teleport's error at
  the end of the grid, ``integral_s^{sigma_max} |D - D_G|(sigma) k(sigma) dsigma / sigma`` with
  ``k`` the Gaussian flow's exact gain (first order in the velocity error, exact when model and warm
  start differ only in their mean), and ``S(s)``, the solver's discretisation error on the Gaussian
  against its exact flow.

Cost: the probe record (:func:`gaussport.tuning.probes.probe`, model calls, cached on disk) and zero
model calls here: about 25 solver runs plus one RK4 reference solve of the surrogate on 16 draws
(64 with the departure form; no reference solve without a surrogate), the reference shared by every
grid with the same first and last level; 0.1-3 s for the 8x8 digits, 3-4 s with the departure form
for the first grid and 0.4-1.6 s for the next. Choices are kept in memory per (solver, options, grid,
teleport, probe record, surrogate).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .. import grids as _grids
from .._checks import as_grid
from .._warm_statistics import with_warm_start_statistics
from ..analytic import Gaussian
from ..denoiser import DenoiserCall
from ..loop import integrate
from ..reference import reference_solve
from ..solvers import Solver
from ..solvers import get as get_solver
from .probes import PROBE_BUDGET_PER_NFE, ProbeRecord, departure, probe

__all__ = ["DEPARTURE_RATIO", "SURROGATES", "auto_sigma_skip", "error_model", "surrogate_form"]

logger = logging.getLogger("gaussport")

_CHOICES: dict[Any, float] = {}
# The surrogate's reference solves: they depend on the grid only through its first level, its last
# positive level and whether it ends in 0 (reference_solve), so every budget on one sigma range
# shares one (about 3 s of the 4 s a departure-form choice costs on the digits).
_REFERENCES: dict[Any, Tensor] = {}
_CANDIDATES = 24
_DRAWS = 16  # the Gaussian-only model and the beta-scaled mixture (as measured)
_SURROGATE_DRAWS = 64  # the departure surrogate: with 16 draws its choice changed with the draw seed
_SEED = 10_001  # the draws inside the error model: disjoint from the reported seeds 0..127
PROBE_SEED = 10_000  # the probes auto makes itself (probes=None)
_REFERENCE_STEPS_PER_UNIT = 20  # RK4 on the surrogate: ~1e-6 relative, far below the errors compared
SURROGATES = ("auto", "departure", "mixture", "gaussian")
# The departure form is chosen where |D - D_G| >= 2 |D_M - D_G| (median over the upper half of the
# probe levels): then |D - D_M| >= |D - D_G| / 2, at least half the model's departure from its
# Gaussian is not the data mixture's, which the mixture form (beta <= 1) cannot carry. Measured
# (three probe seeds each): 4.5-5.0 on the digits network, 0.74-0.81 and 1.00 on the exact mixtures.
DEPARTURE_RATIO = 2.0


def surrogate_form(record: ProbeRecord) -> str:
    """The surrogate ``sigma_skip="auto"`` sweeps on for this record (docs/auto-level.md#which-surrogate).

    ``"gaussian"`` without a data-fitted surrogate; ``"departure"`` when the record carries the
    departure fit and the model's ``|D - D_G|`` is at least :data:`DEPARTURE_RATIO` times the
    mixture's ``|D_M - D_G|`` (median of the ratio over the upper half of the probe levels, where
    the teleport is decided); ``"mixture"`` otherwise.
    """
    sur = record.surrogate
    if sur is None:
        return "gaussian"
    if not sur.shifts:
        return "mixture"
    upper = (len(record.levels) + 1) // 2  # levels are stored decreasing
    # b = 0: the mixture is the Gaussian there; a model that departs from it is all departure (inf),
    # one that does not departs as little as the mixture (ratio 1).
    ratios = sorted(
        a / b if b > 0 else (math.inf if a > 0 else 1.0)
        for a, b in zip(record.absolute_rms[:upper], sur.rms[:upper], strict=True)
    )
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else 0.5 * (ratios[middle - 1] + ratios[middle])
    return "departure" if median >= DEPARTURE_RATIO else "mixture"


def _interpolate(record: ProbeRecord, sigma: float) -> float:
    """``|D - D_G|`` RMS at ``sigma``: log-log interpolation in the record, constant outside it."""
    levels = record.levels[::-1]  # increasing
    values = record.absolute_rms[::-1]
    if sigma <= levels[0]:
        return values[0]
    if sigma >= levels[-1]:
        return values[-1]
    logs = [math.log(max(v, 1e-300)) for v in values]
    return math.exp(_log_interpolate([math.log(v) for v in levels], logs, sigma))


def _teleport_error(
    record: ProbeRecord,
    warm_start: Gaussian,
    s: float,
    sigma_max: float,
    end: float,
    points: int = 48,
) -> float:
    """``T(s) = integral_s^{sigma_max} a(sigma) k(sigma) dsigma / sigma`` (trapezoid in log sigma).

    ``a`` is the probes' ``|D - D_G|`` RMS and ``k(sigma)`` the gain of the Gaussian flow map from
    ``sigma`` to ``end`` on a perturbation: the velocity error ``a / sigma`` made at ``sigma`` moves the
    state by ``a dsigma / sigma`` and reaches the end of the grid scaled by ``k``
    (docs/auto-level.md#the-teleport-error). The map's linear part is
    ``(Sigma + end^2)^(1/2) (Sigma + sigma^2)^(-1/2)``, so its RMS gain on an isotropic random
    direction is exactly ``k^2 = mean_i (lambda_i + end^2) / (lambda_i + sigma^2)`` over the ``d``
    eigenvalues: O(d) per point from the spectrum, no matrix product.
    """
    if s >= sigma_max:
        return 0.0
    logs = torch.linspace(math.log(s), math.log(sigma_max), points, dtype=torch.float64)
    lam = warm_start.cov.spectrum().to(torch.float64)
    sigma2 = torch.exp(2.0 * logs)
    gains = ((lam + end * end)[None, :] / (lam[None, :] + sigma2[:, None])).mean(dim=1).sqrt()
    a = torch.tensor([_interpolate(record, math.exp(v)) for v in logs.tolist()], dtype=torch.float64)
    return float(torch.trapezoid(a * gains, logs))


def _below(grid: Sequence[float], s: float, teleport: Any) -> tuple[float, ...]:
    if teleport == "truncate":
        return tuple(_grids.truncate(grid, s))
    if teleport == "respace":
        return tuple(_grids.respace(grid, s))
    if isinstance(teleport, _grids.GridFamily):
        return tuple(_grids.respace(grid, s, teleport))
    raise ValueError(f"teleport must be 'truncate', 'respace' or a grids.GridFamily; got {teleport!r}.")


def _rms(x: Tensor) -> float:
    return float(x.flatten(1).norm(dim=1).square().mean().sqrt())


def _log_interpolate(logs: Sequence[float], values: Sequence[Any], sigma: float) -> Any:
    """Linear interpolation in ``log sigma`` of ``values`` at increasing ``logs``, constant outside."""
    t = math.log(sigma) if sigma > 0 else -math.inf
    if t <= logs[0]:
        return values[0]
    if t >= logs[-1]:
        return values[-1]
    for k in range(1, len(logs)):
        if t <= logs[k]:
            f = (t - logs[k - 1]) / (logs[k] - logs[k - 1])
            return values[k - 1] + f * (values[k] - values[k - 1])
    return values[-1]


class _SurrogateDenoiser:
    """The stand-in for the model's flow (docs/auto-level.md#the-surrogate), one of two forms:

    * ``"departure"``: the data mixture plus the model's affine departure from it,
      ``D_s = D_M + shift + g0 (x - mu) + g1 H_sigma (x - mu)`` with
      ``H_sigma = Sigma (Sigma + sigma^2 I)^-1``, shift and gains per probe level
      (:func:`~gaussport.tuning.probes.fit_departure`);
    * ``"mixture"``: ``D_s = D_G + beta(sigma) (D_M - D_G)``, the mixture pulled towards the warm
      start where the model is closer to it than the mixture is,
      ``beta = min(1, |D - D_G| / |D_M - D_G|)`` per probe level (both RMS on the same probes).

    Per-level values are interpolated linearly in ``log sigma`` and constant outside the probed
    levels. One ``sigma`` per call (the solvers and the reference solve call with a single level per
    batch).
    """

    def __init__(self, warm_start: Gaussian, record: ProbeRecord, form: str) -> None:
        assert record.surrogate is not None and form in ("departure", "mixture")
        self.form = form
        sur = record.surrogate
        self.gaussian = warm_start
        self.mixture = sur.mixture()
        self.logs = [math.log(v) for v in record.levels[::-1]]  # increasing
        self.shifts = [torch.tensor(v, dtype=torch.float64) for v in sur.shifts[::-1]]
        self.gains = [torch.tensor(g, dtype=torch.float64) for g in sur.gains[::-1]]
        ratios = [
            min(1.0, a / b) if b > 0 else 1.0 for a, b in zip(record.absolute_rms, sur.rms, strict=True)
        ]
        self.betas = ratios[::-1]

    @property
    def carries_departure(self) -> bool:
        return self.form == "departure"

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        level = float(sigma.reshape(-1)[0])
        if self.carries_departure:
            d_m = self.mixture(x, sigma)
            if level <= 0.0:
                return d_m
            shift = _log_interpolate(self.logs, self.shifts, level)
            gains = _log_interpolate(self.logs, self.gains, level)
            return d_m + departure(self.gaussian, x, shift, gains, level).to(d_m.dtype)
        d_g = self.gaussian(x, sigma)
        beta = _log_interpolate(self.logs, self.betas, level)
        if beta == 0.0:
            return d_g
        return d_g + beta * (self.mixture(x, sigma) - d_g)


def _surrogate_model(
    warm_start: Gaussian,
    grid: Sequence[float],
    solver: Solver,
    record: ProbeRecord,
    teleport: Any,
    levels: Sequence[float],
    draws: int,
    seed: int,
    form: str,
) -> dict[float, tuple[float, float]]:
    """``{s: (T(s), S_s(s))}``: the sweep run on the surrogate of ``form`` (zero model calls).

    ``S_s(s)``: the solver teleported to ``s`` on the surrogate vs the surrogate's own reference solve
    from the same states at ``sigmas[0]`` (teleport and discretisation error of the surrogate).
    ``T(s)``: with the beta-scaled mixture, the first-order teleport error of the model's
    ``|D - D_G|`` (the Gaussian-only term); with the departure fit, 0: that surrogate's own teleport
    error already follows the model's affine departure (docs/auto-level.md#the-surrogate).
    """
    assert record.surrogate is not None
    top = grid[0]
    surrogate = _SurrogateDenoiser(warm_start, record, form)
    gen = torch.Generator().manual_seed(int(seed))
    x_top = warm_start.sample(draws, top, gen, dtype=torch.float64).to(torch.float64)
    span = (top, min(v for v in grid if v > 0.0), grid[-1] == 0.0)
    key = (record, id(warm_start), form, draws, int(seed), span)
    reference = _REFERENCES.get(key)
    if reference is None:
        reference = reference_solve(surrogate, x_top, grid, steps_per_unit=_REFERENCE_STEPS_PER_UNIT)
        if len(_REFERENCES) >= 8:
            _REFERENCES.clear()
        _REFERENCES[key] = reference
    distances = _sweep_distances(surrogate, warm_start, grid, solver, teleport, levels, x_top, reference)
    out: dict[float, tuple[float, float]] = {}
    for s, distance in distances.items():
        # The model's whole first-order teleport error for the beta-scaled mixture, not only the part
        # the surrogate misses: counting both teleport errors biases towards shorter teleports, which
        # measured better than a term from the residual |D - D_s| alone.
        t = 0.0 if surrogate.carries_departure else _teleport_error(record, warm_start, s, top, grid[-1])
        out[s] = (t, float(distance.square().mean().sqrt()))
    return out


def _sweep_distances(
    denoiser: Any,
    warm_start: Gaussian,
    grid: Sequence[float],
    solver: Solver,
    teleport: Any,
    levels: Sequence[float],
    x_top: Tensor,
    reference: Tensor,
) -> dict[float, Tensor]:
    """Per level ``s``: the per-draw distance between the solver teleported from ``x_top`` (at
    ``grid[0]``) to ``s`` on ``denoiser`` and ``reference``, the denoiser's own endpoint (float64).
    The sweep behind the surrogate model (and ``benchmarks/surrogate_draws.py``); zero model calls
    when ``denoiser`` is analytic."""
    top = grid[0]
    call = DenoiserCall(denoiser, model_dtype=torch.float64, state_dtype=torch.float64)
    out: dict[float, Tensor] = {}
    ems_cache: dict[Any, Any] = {}
    for s in levels:
        below = _below(grid, s, teleport) if s < top else tuple(grid)
        run = with_warm_start_statistics(solver, warm_start, below, cache=ems_cache)
        x_s = warm_start.flow(x_top, top, s) if s < top else x_top
        x_end, _ = integrate(call, run, x_s, as_grid(below), disable=True)
        out[s] = (x_end - reference).flatten(1).norm(dim=1)
    return out


def _checked_surrogate(record: ProbeRecord, surrogate: bool | str) -> str:
    """The form ``surrogate`` asks for (``True``/``"auto"``: :func:`surrogate_form`), checked against
    what the record carries."""
    if surrogate is True or surrogate == "auto":
        return surrogate_form(record)
    if surrogate is False or surrogate == "gaussian":
        return "gaussian"
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}.")
    if record.surrogate is None:
        raise ValueError(
            f"surrogate={surrogate!r} needs a probe record made from data (probe(model, gaussian, "
            "data)); this one was probed from the Gaussian's marginal. Pass data, or surrogate='auto'."
        )
    if surrogate == "departure" and not record.surrogate.shifts:
        raise ValueError(
            "surrogate='departure' needs a probe record with the departure fit (probe(..., "
            "departure=True) or the default with data and a Gaussian warm start); this one has none."
        )
    return str(surrogate)


def error_model(
    warm_start: Gaussian,
    sigmas: Sequence[float],
    solver: Solver,
    record: ProbeRecord,
    *,
    teleport: Any = "respace",
    candidates: Sequence[float] | None = None,
    draws: int | None = None,
    seed: int = _SEED,
    surrogate: bool | str = "auto",
) -> dict[float, tuple[float, float]]:
    """``{s: (T(s), S(s))}`` over candidate levels (default: 24 geometric levels above the grid's smallest
    positive level up to ``sigmas[0]``). Zero model calls; docs/auto-level.md derives both terms.

    ``surrogate``: ``"auto"`` (or ``True``) -- the form :func:`surrogate_form` picks for the record;
    ``"departure"`` or ``"mixture"`` -- the sweep on that form of the record's surrogate;
    ``"gaussian"`` (or ``False``) -- ``S`` from the Gaussian alone."""
    form = _checked_surrogate(record, surrogate)
    grid = [float(v) for v in as_grid(sigmas)]
    top, end = grid[0], grid[-1]
    low = min(v for v in grid if v > 0.0)
    if candidates is None:
        ratio = top / low
        candidates = [low * ratio ** (k / _CANDIDATES) for k in range(1, _CANDIDATES + 1)]
    levels = sorted({float(v) for v in candidates if low < v <= top} | {top}, reverse=True)
    if form != "gaussian":
        assert record.surrogate is not None
        if tuple(record.surrogate.sample_shape) == tuple(warm_start.shape):
            n = draws if draws is not None else (_SURROGATE_DRAWS if form == "departure" else _DRAWS)
            return _surrogate_model(warm_start, grid, solver, record, teleport, levels, n, seed, form)
        logger.warning(
            "the probe record's surrogate has sample shape %s, the warm start %s: using the Gaussian "
            "error model",
            record.surrogate.sample_shape,
            warm_start.shape,
        )
    gen = torch.Generator().manual_seed(int(seed))
    call = DenoiserCall(warm_start, model_dtype=torch.float64, state_dtype=torch.float64)
    out: dict[float, tuple[float, float]] = {}
    ems_cache: dict[Any, Any] = {}
    for s in levels:
        below = _below(grid, s, teleport) if s < top else tuple(grid)
        run = with_warm_start_statistics(solver, warm_start, below, cache=ems_cache)
        x_s = warm_start.sample(_DRAWS if draws is None else draws, s, gen, dtype=torch.float64)
        x_s = x_s.to(torch.float64)
        exact = warm_start.flow(x_s, s, end)
        x_end, _ = integrate(call, run, x_s, as_grid(below), disable=True)
        out[s] = (_teleport_error(record, warm_start, s, top, end), _rms(x_end - exact))
    return out


def _options_key(options: dict[str, Any]) -> str:
    try:
        return json.dumps(options, sort_keys=True, default=repr)
    except TypeError:
        return repr(sorted(options.items()))


def auto_sigma_skip(
    denoiser: Any,
    warm_start: Any,
    sigmas: Sequence[float] | Tensor,
    solver: Solver | str,
    *,
    teleport: Any = "respace",
    probes: ProbeRecord | str | os.PathLike[str] | None = None,
    data: Tensor | None = None,
    cache: bool | str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    surrogate: str = "auto",
    **options: Any,
) -> float:
    """The teleport level for ``solver`` on ``sigmas``: the argmin of the error model ``T(s) + S(s)``.

    Args:
        denoiser: the model (probed unless ``probes`` is given).
        warm_start: the :class:`~gaussport.analytic.Gaussian` that teleports.
        sigmas: the caller's grid (decreasing).
        solver: a registered name (with ``**options``) or a solver instance.
        teleport: ``"respace"``, ``"truncate"`` or a grid family, as in :func:`gaussport.sample`.
        probes: a :class:`~gaussport.tuning.probes.ProbeRecord` or the path of one; ``None`` probes
            ``denoiser`` (from ``data`` if given) through the cache ``cache``.
        data: training data to probe from.
        cache: the probe cache (see :func:`~gaussport.tuning.probes.probe`).
        device: where the model runs while it is probed (default: the device of its parameters,
            else the CPU).
        surrogate: what the sweep runs on: ``"auto"`` (:func:`surrogate_form` decides from the
            record), ``"departure"`` (the data mixture plus the model's affine departure from it),
            ``"mixture"`` (the beta-scaled data mixture) or ``"gaussian"`` (the Gaussian alone);
            ``"departure"`` and ``"mixture"`` need a record probed from data (``"auto"`` without
            one is ``"gaussian"``).

    Returns:
        A level in ``[min positive level, sigmas[0]]``; ``sigmas[0]`` (no teleport) whenever the model
        does not predict a teleport to beat it.

    Raises:
        ValueError: a warm start that is not a Gaussian, a grid with fewer than two levels, a
            ``surrogate`` the record cannot give.
        TypeError: options with a solver instance.
    """
    if not isinstance(warm_start, Gaussian):
        raise ValueError(
            "sigma_skip='auto' needs a gaussport.analytic.Gaussian warm start; got "
            f"{type(warm_start).__name__}. "
            "Pass a numeric sigma_skip instead."
        )
    grid = tuple(float(v) for v in as_grid(sigmas))
    if isinstance(solver, str):
        solver_obj = get_solver(solver, **options)
    elif options:
        raise TypeError("solver options were given with a solver instance; configure the instance instead.")
    else:
        solver_obj = solver
    if isinstance(probes, ProbeRecord):
        record = probes
    elif probes is not None:
        record = ProbeRecord.load(probes)
    else:
        record = probe(denoiser, warm_start, data, seed=PROBE_SEED, cache=cache, device=device)
    nfe = solver_obj.evaluations(grid)
    if record.evaluations > PROBE_BUDGET_PER_NFE * nfe:
        logger.warning(
            "the probe record cost %d evaluations, over the budget of %d (%d per NFE at NFE %d)",
            record.evaluations,
            PROBE_BUDGET_PER_NFE * nfe,
            PROBE_BUDGET_PER_NFE,
            nfe,
        )
    form = _checked_surrogate(record, surrogate)
    key = (repr(solver_obj), grid, repr(teleport), record, id(warm_start), form)
    if key in _CHOICES:
        return _CHOICES[key]
    model = error_model(warm_start, grid, solver_obj, record, teleport=teleport, surrogate=form)
    totals = {s: t + d for s, (t, d) in model.items()}
    best = min(totals, key=lambda s: (totals[s], -s))
    if not totals[best] < totals[grid[0]]:
        best = grid[0]
    logger.info(
        "sigma_skip='auto': %g for %s at NFE %d (%s surrogate; predicted error %.3g, no teleport %.3g)",
        best,
        type(solver_obj).__name__,
        nfe,
        form,
        totals[best],
        totals[grid[0]],
    )
    if len(_CHOICES) > 256:
        _CHOICES.clear()
    _CHOICES[key] = best
    return best
