"""k-diffusion drop-in: samplers with k-diffusion's exact signature, and k-diffusion models as denoisers.

For every registered solver there is a plain function ::

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, *,
                  <solver options>, warm_start=None, sigma_skip=None, teleport="truncate",
                  parameterization="ve", probes=None, recipe=None, nfe=None)

that behaves like k-diffusion's own ``sample_euler`` & co.
(docs/peer-conventions.md#the-sampler-calling-convention): ``model`` is a
k-diffusion denoiser called as ``model(x, sigma * x.new_ones([B]), **extra_args)``, ``x`` is already
at ``sigmas[0]``, the function runs under ``torch.no_grad()`` and returns the state at ``sigmas[-1]``.
:func:`as_k_diffusion_sampler` is the one way to build such a sampler, for any registered solver
and configuration (e.g. a warm start baked in); the module defines ``sample_<name> =
as_k_diffusion_sampler("<name>")`` for every built-in solver, so that the module is a drop-in for
``k_diffusion.sampling`` that type checkers and IDEs can see. Every option is a real keyword-only
parameter, because front-ends pass options only when ``inspect.signature`` names them.

Like k-diffusion's samplers they take what front-ends pass
(docs/adapters.md#k-diffusion-drop-in-samplers): ``extra_args`` is the caller's dict, read at
every call; increasing sigmas (ComfyUI's FlipSigmas) run :func:`gaussport.inversion.invert`;
repeated levels are zero-length intervals that cost no evaluation and still get their callback
(docs/conventions.md#repeated-levels-front-end-grids).

This module does not import k-diffusion: the calling convention is implemented natively
(k-diffusion is only a test-time cross-check, docs/peer-conventions.md#import-weight).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .. import _deprecation
from .._checks import Grid, as_grid, check_state, grid_values, noise_level
from ..grids import merge_repeats
from ..inversion import check_inversion, invert
from ..sampling import StepInfo, sample, solve, with_warm_start_statistics
from ..solvers import Solver, available, solver_class
from ..solvers import get as get_solver
from ._teleport import StatisticsCache, check_sample_shape, float_attribute, resolve_warm_start

__all__ = [
    "KDiffusionDenoiser",
    "as_k_diffusion_sampler",
    "sample_ddim",
    "sample_dpm_solver_v3",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_taylor",
    "sample_dpmpp_2s",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_fixed",
    "sample_euler",
    "sample_heun",
    "sample_ipndm",
    "sample_ipndm_v",
    "sample_unipc_bh1",
    "sample_unipc_bh2",
    "sample_unipc_vary_coeff",
]

logger = logging.getLogger("gaussport")

_P = inspect.Parameter
_ADAPTER_OPTIONS: dict[str, Any] = {
    "warm_start": None,
    "sigma_skip": None,
    "teleport": "truncate",
    "parameterization": "ve",
    "schedule": None,  # deprecated name of teleport
    "probes": None,  # with sigma_skip="auto": a ProbeRecord, its file, or data to probe from
    "recipe": None,  # a tuned gaussport.tuning.Recipe or its JSON file
    "nfe": None,  # with recipe: the entry's budget (default: what sigmas cost)
}
_PARAMETERIZATIONS = ("ve", "flow")


class KDiffusionDenoiser:
    """A k-diffusion model as a gaussport denoiser, with its ``extra_args`` bound.

    Works for anything k-diffusion samplers accept: ``k_diffusion.external`` wrappers
    (``DiscreteEpsDDPMDenoiser``, ``CompVisDenoiser``, ``VDenoiser``, ...), k-diffusion's own
    ``k_diffusion.layers.Denoiser``, front-end CFG wrappers. ``D(x, sigma) = model(x, sigma, **extra_args)``.

    Args:
        model: ``model(x, sigma, **extra_args) -> x0`` with ``sigma`` of shape ``[B]`` (VE).
        extra_args: keyword arguments passed on every call, untouched (A1111: cond/uncond/cond_scale;
            ComfyUI: model_options/seed; class labels; ...). The mapping is kept, not copied, and
            read at every call, as k-diffusion's samplers do: a front-end that replaces an entry
            mid-run (A1111's SDXL base-to-refiner switch replaces ``cond``/``uncond``) reaches the
            model from the next call on.

    ``sigma_min``/``sigma_max`` report the wrapped model's training range when it has one (as Python
    floats), else ``None``.
    """

    __slots__ = ("model", "extra_args")

    def __init__(self, model: Callable[..., Tensor], extra_args: Mapping[str, Any] | None = None) -> None:
        if not callable(model):
            raise TypeError(
                f"model must be callable as model(x, sigma, **extra_args); got {type(model).__name__}."
            )
        self.model = model
        # The caller's own mapping, live: never a copy (docs/adapters.md#k-diffusion-drop-in-samplers).
        self.extra_args: Mapping[str, Any] = {} if extra_args is None else extra_args

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.model(x, sigma, **self.extra_args)

    @property
    def sigma_min(self) -> float | None:
        return float_attribute(self.model, "sigma_min")

    @property
    def sigma_max(self) -> float | None:
        return float_attribute(self.model, "sigma_max")

    def __repr__(self) -> str:
        return f"KDiffusionDenoiser({type(self.model).__name__}, extra_args={sorted(self.extra_args)})"


# ----------------------------------------------------------------------------- solver options


def _solver_options(solver: str | Solver) -> tuple[str, dict[str, Any], Callable[[dict[str, Any]], Solver]]:
    """The solver's name, its options with their defaults (``_P.empty`` if required), and a builder."""
    if isinstance(solver, Solver):
        fields = dataclasses.fields(solver) if dataclasses.is_dataclass(solver) else ()
        defaults = {f.name: getattr(solver, f.name) for f in fields}
        name = type(solver).__name__.lower()
        return name, defaults, lambda opts: dataclasses.replace(solver, **opts) if opts else solver
    if not isinstance(solver, str):
        raise TypeError(
            f"solver must be a registered name or a Solver instance; got {type(solver).__name__}."
        )
    cls, preset = solver_class(solver)
    defaults = {}
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        if not f.init:
            continue
        if f.name in preset:
            defaults[f.name] = preset[f.name]
        elif f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
        else:
            defaults[f.name] = _P.empty
    return solver, defaults, lambda opts: get_solver(solver, **opts)


def _signature(solver_defaults: dict[str, Any], adapter_defaults: dict[str, Any]) -> inspect.Signature:
    params = [
        _P("model", _P.POSITIONAL_OR_KEYWORD),
        _P("x", _P.POSITIONAL_OR_KEYWORD),
        _P("sigmas", _P.POSITIONAL_OR_KEYWORD),
        _P("extra_args", _P.POSITIONAL_OR_KEYWORD, default=None),
        _P("callback", _P.POSITIONAL_OR_KEYWORD, default=None),
        _P("disable", _P.POSITIONAL_OR_KEYWORD, default=None),
    ]
    params += [_P(name, _P.KEYWORD_ONLY, default=d) for name, d in solver_defaults.items()]
    params += [_P(name, _P.KEYWORD_ONLY, default=d) for name, d in adapter_defaults.items()]
    return inspect.Signature(params)


# ----------------------------------------------------------------------------- the sampler


class _Callbacks:
    """k-diffusion's callback dicts from :class:`StepInfo`: one per interval of the caller's ``sigmas``.

    The solver runs the caller's levels with repeats merged (:func:`gaussport.grids.merge_repeats`),
    so a :class:`StepInfo` for interval ``j`` of the merged grid stands for the caller's intervals
    starting at that level: the zero-length ones first, then the one that moves. A zero-length
    interval reports the state there and ``D`` of the evaluation the next step makes at the same
    state and level -- the value k-diffusion's samplers compute there, at no extra cost. Repeats at
    the end of the grid are reported by :meth:`finish`, with the final state and the newest
    denoised value (the state itself when no evaluation was made at all).
    """

    def __init__(
        self,
        callback: Callable[[dict[str, Any]], Any],
        sigmas: Any,
        values: list[float],
        where: tuple[int, ...],
        out_dtype: torch.dtype,
    ) -> None:
        self.callback = callback
        self.sig_tensor = sigmas if isinstance(sigmas, Tensor) else None
        self.values = values
        self.out_dtype = out_dtype
        self.last = where[-1]
        self.starting: dict[int, list[int]] = {}
        for i in range(len(values) - 1):
            self.starting.setdefault(where[i], []).append(i)
        self.denoised: Tensor | None = None

    def _sigma(self, i: int, sigma: float) -> Tensor:
        if self.sig_tensor is not None and sigma == self.values[i]:
            return self.sig_tensor[i]  # exactly what k-diffusion passes: a 0-d view, no host sync
        if self.sig_tensor is not None:  # a level of a teleport-truncated or respaced grid
            return torch.full((), sigma, dtype=self.sig_tensor.dtype, device=self.sig_tensor.device)
        return torch.tensor(sigma, dtype=torch.float64)

    def _emit(self, i: int, sigma: float, x: Tensor, denoised: Tensor) -> None:
        level = self._sigma(i, sigma)
        self.callback(
            {"x": x, "i": i, "sigma": level, "sigma_hat": level, "denoised": denoised}
        )  # sigma_hat == sigma: no churn, the model is evaluated at sigma itself

    def __call__(self, info: StepInfo) -> None:
        x, denoised = info.x.to(self.out_dtype), info.denoised.to(self.out_dtype)
        self.denoised = denoised
        for i in self.starting.get(info.i, ()):
            self._emit(i, info.sigma, x, denoised)

    def finish(self, x: Tensor) -> None:
        """Report the zero-length intervals at the grid's last level, after the run."""
        for i in self.starting.get(self.last, ()):
            self._emit(i, self.values[i], x, x if self.denoised is None else self.denoised)


def _effective_skip(grid: Grid, sigma_skip: Any) -> float | None:
    """The teleport level clipped to the grid; ``None`` if there is nothing to teleport."""
    skip = noise_level(sigma_skip, name="sigma_skip")
    low, high = min(grid[0], grid[-1]), max(grid[0], grid[-1])
    if skip >= high:
        # img2img / second passes start below the teleport level (an inversion: end below it):
        # nothing to teleport.
        logger.debug("sigma_skip=%g is not below the grid's top level %g: no teleport", skip, high)
        return None
    # A grid that lies above the teleport level (ComfyUI SplitSigmas) is covered by the teleport
    # entirely; the next pass teleports on from there (flow maps compose exactly).
    return max(skip, low)


def _run(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Any,
    extra_args: Mapping[str, Any] | None,
    callback: Callable[[dict[str, Any]], Any] | None,
    disable: bool | None,
    solver: Solver,
    warm_start: Any,
    sigma_skip: Any,
    teleport: Any,
    parameterization: str,
    files: StatisticsCache,
    name: str,
    tuning: dict[str, Any] | None = None,
) -> Tensor:
    """One sampler call; ``tuning`` holds ``probes``, ``recipe``, ``nfe`` and, for a recipe, the solver's
    registered name (``"registered"``) and the options the caller changed (``"changed"``)."""
    tuning = dict(tuning or {})
    registered, changed = tuning.pop("registered", None), tuning.pop("changed", ())
    tuning = {k: v for k, v in tuning.items() if v is not None}
    if parameterization not in _PARAMETERIZATIONS:
        raise ValueError(
            "parameterization must be 've' (x = x0 + sigma eps: k-diffusion, A1111, EDM, ComfyUI eps/v "
            "models) "
            "or 'flow' (x = (1 - sigma) x0 + sigma eps: ComfyUI CONST / SD3 / Flux); got "
            f"{parameterization!r}."
        )
    check_state(x)  # also for a grid of one level, where x itself is returned
    extra = {} if extra_args is None else extra_args
    values = grid_values(sigmas)  # one device->host copy if sigmas live on the GPU, before the loop
    if len(values) == 1:
        return x  # no interval: k-diffusion samplers return x unchanged
    # Repeated levels are zero-length intervals: k-diffusion steps through them without moving.
    levels, where = merge_repeats(values)
    increasing = len(levels) > 1 and levels[-1] > levels[0]
    grid = as_grid(levels, increasing=increasing)
    if increasing:
        if parameterization == "flow":
            raise ValueError(
                "increasing sigmas (an inversion) are supported with parameterization='ve' only; a "
                "rectified-flow model's times cannot be inverted up to t = 1 (pure noise) yet."
            )
        check_inversion(solver, name)
    warm = resolve_warm_start(warm_start, extra, cache=files)
    if warm is None and (sigma_skip is not None or tuning):
        what = "sigma_skip" if sigma_skip is not None else "/".join(sorted(tuning))
        raise ValueError(
            f"{what} was given without warm_start; pass the statistics (a Gaussian or a file path)."
        )
    if warm is not None:
        if sigma_skip is None and "recipe" not in tuning:
            raise ValueError(
                "warm_start needs sigma_skip, the noise level to teleport to (e.g. as_k_diffusion_sampler("
                "'euler', warm_start=path, sigma_skip=10.0)), sigma_skip='auto' or recipe=...; "
                "docs/adapters.md explains how to choose it."
            )
        check_sample_shape(warm, x.shape[1:])
    auto = _checked_tuning(sigma_skip, tuning, increasing, parameterization)
    denoiser = KDiffusionDenoiser(model, extra)
    if "recipe" in tuning:
        if registered is None:
            raise ValueError(
                "recipe= needs a sampler built from a registered solver name "
                "(as_k_diffusion_sampler('dpmpp_2m')), not a solver instance: the recipe's entries are "
                "looked up by name."
            )
        if changed:
            raise ValueError(
                f"solver options {sorted(changed)} were given with recipe=; the entry carries its "
                "options: drop them (or drop the recipe)."
            )
        from ..tuning.recipe import load_recipe  # on first use: the recipe module is not needed otherwise

        recipe = load_recipe(tuning["recipe"])
        if grid[0] < float(recipe.sigma_max) * (1 - 1e-6):
            # img2img and second passes (hires fix) start below the recipe's sigma_max: the recipe's
            # teleport does not apply there, as a numeric sigma_skip above the grid does not.
            logger.info(
                "recipe tuned from sigma_max=%g, grid starts at %g: solving the grid without teleport",
                float(recipe.sigma_max),
                grid[0],
            )
        else:
            return _sample_recipe(
                denoiser,
                x,
                sigmas,
                grid,
                warm,
                recipe,
                tuning.get("nfe"),
                registered,
                callback,
                disable,
            )
    reports = None if callback is None else _Callbacks(callback, sigmas, values, where, x.dtype)
    if warm is None or len(grid) == 1 or "recipe" in tuning:
        skip: Any = None
    else:
        skip = "auto" if auto else _effective_skip(grid, sigma_skip)
    out = (
        x
        if len(grid) == 1
        else _integrate(
            denoiser,
            x,
            grid,
            solver,
            warm,
            skip,
            teleport,
            parameterization,
            reports,
            disable,
            tuning.get("probes"),
        )
    )
    if reports is not None:
        reports.finish(out)
    return out


def _integrate(
    denoiser: KDiffusionDenoiser,
    x: Tensor,
    grid: Grid,
    solver: Solver,
    warm: Any,
    skip: float | None,
    teleport: Any,
    parameterization: str,
    cb: _Callbacks | None,
    disable: bool | None,
    probes: Any = None,
) -> Tensor:
    """Run the merged grid: a solve, a teleport then a solve, or (increasing grid) an inversion.

    ``skip`` is a level, ``None`` (no teleport) or ``"auto"`` (:func:`gaussport.sample` chooses it,
    from ``probes``)."""
    if parameterization == "flow":
        from .flow import RectifiedFlowDenoiser, sample_rectified_flow

        flow_denoiser = RectifiedFlowDenoiser(denoiser.__call__, prediction="x0")
        return sample_rectified_flow(
            flow_denoiser,
            x,
            grid,
            solver,
            warm_start=None if skip is None else warm,
            t_skip=skip,
            teleport=teleport,
            callback=cb,
            disable=disable,
        ).x
    upward = grid[-1] > grid[0]  # ComfyUI's FlipSigmas: unsampling, data to noise
    if skip is None:
        if upward:
            return invert(denoiser, x, grid, solver, callback=cb, disable=disable).x
        if warm is not None:  # nothing to teleport (img2img), but the warm start's EMS still apply
            solver = with_warm_start_statistics(solver, warm, grid)
        return solve(denoiser, x, grid, solver, callback=cb, disable=disable).x
    # The lowest positive level the solver integrates: nothing is left to respace at or below it.
    lowest = grid[0] if upward else (grid[-2] if grid[-1] == 0.0 else grid[-1])
    if skip == "auto":  # a level above the grid's lowest positive one (auto_sigma_skip's range)
        return sample(
            denoiser,
            x,
            grid,
            solver,
            warm_start=warm,
            sigma_skip="auto",
            teleport=teleport,
            probes=probes,
            callback=cb,
            disable=disable,
        ).x
    if teleport == "respace" and skip <= lowest:
        teleport = "truncate"  # the teleport covers every positive level
    run = invert if upward else sample
    return run(
        denoiser,
        x,
        grid,
        solver,
        warm_start=warm,
        sigma_skip=skip,
        teleport=teleport,
        callback=cb,
        disable=disable,
    ).x


def _checked_tuning(sigma_skip: Any, tuning: dict[str, Any], increasing: bool, parameterization: str) -> bool:
    """Whether the level is ``"auto"``; refuses the combinations :func:`gaussport.sample` refuses, and
    automatic levels and recipes where the adapter cannot use them (inversions, rectified-flow times)."""
    auto = isinstance(sigma_skip, str) and sigma_skip == "auto"
    if isinstance(sigma_skip, str) and not auto:
        raise ValueError(f"sigma_skip must be a noise level or 'auto'; got {sigma_skip!r}.")
    if "recipe" in tuning and (sigma_skip is not None or "probes" in tuning):
        raise ValueError(
            "recipe= was given with sigma_skip= or probes=; the recipe's entry sets the teleport level: "
            "drop sigma_skip (or drop the recipe to choose the level yourself)."
        )
    if "nfe" in tuning and "recipe" not in tuning:
        raise ValueError("nfe= selects a recipe entry; pass recipe=... too, or drop nfe.")
    if "probes" in tuning and not auto:
        raise ValueError("probes= is only used with sigma_skip='auto'; drop it or pass sigma_skip='auto'.")
    if (auto or "recipe" in tuning) and (increasing or parameterization != "ve"):
        what = "sigma_skip='auto'" if auto else "recipe="
        raise ValueError(
            f"{what} is supported for sampling (decreasing sigmas) with parameterization='ve'; for "
            f"{'an inversion' if increasing else 'rectified-flow times'} pass a numeric sigma_skip instead."
        )
    return auto


def _sample_recipe(
    denoiser: KDiffusionDenoiser,
    x: Tensor,
    sigmas: Any,
    grid: Grid,
    warm: Any,
    recipe: Any,
    nfe: Any,
    registered: str,
    callback: Callable[[dict[str, Any]], Any] | None,
    disable: bool | None,
) -> Tensor:
    """The recipe's entry for this solver and budget, run by :func:`gaussport.sample`.

    The solver integrates the entry's grid, not the caller's: ``callback`` gets one call per interval
    of that grid (``i`` counts them), with the entry's levels as ``sigma``.
    """
    like = sigmas if isinstance(sigmas, Tensor) else torch.tensor(0.0, dtype=torch.float64)

    def report(info: StepInfo) -> None:
        level = torch.full((), info.sigma, dtype=like.dtype, device=like.device)
        callback(  # type: ignore[misc]
            {
                "x": info.x.to(x.dtype),
                "i": info.i,
                "sigma": level,
                "sigma_hat": level,
                "denoised": info.denoised.to(x.dtype),
            }
        )

    return sample(
        denoiser,
        x,
        grid,
        registered,
        warm_start=warm,
        recipe=recipe,
        nfe=nfe,
        callback=None if callback is None else report,
        disable=disable,
    ).x


def as_k_diffusion_sampler(solver: str | Solver = "euler", /, **options: Any) -> Callable[..., Tensor]:
    """A k-diffusion-signature sampler running ``solver``, with ``options`` as its defaults.

    Args:
        solver: a registered solver name or a solver instance.
        **options: defaults for the returned function's keyword options: the solver's own options
            (its dataclass fields), and

            * ``warm_start``: a :class:`~gaussport.analytic.Gaussian`, a statistics file path
              (read once per sampler, again if the file changes), or a
              :class:`~gaussport.adapters.guidance.ClassConditionalGaussian` (labels read from
              ``extra_args[label_key]``);
            * ``sigma_skip``: the teleport level. Grids starting at or below it (img2img) are
              solved without teleport; grids ending above it are teleported entirely (0 evaluations);
            * ``teleport``: ``"truncate"`` (default; fewer evaluations) or ``"respace"`` (same
              number of steps below ``sigma_skip``), as in :func:`gaussport.sample`
              (``schedule`` is its deprecated name);
            * ``parameterization``: ``"ve"`` (default) or ``"flow"`` for models whose sigma is the
              rectified-flow time (``x = (1 - sigma) x0 + sigma eps``, ComfyUI ``CONST`` models);
              the sigmas may then start at 1 (pure noise);
            * ``sigma_skip="auto"`` with ``probes``: the level :func:`gaussport.sample` chooses for
              this solver, grid and ``teleport`` (``probes``: a
              :class:`~gaussport.tuning.ProbeRecord`, its file or data; ``None`` probes the model
              once, cached on disk);
            * ``recipe`` (with ``nfe``): a tuned :class:`~gaussport.tuning.Recipe` or its file, as in
              :func:`gaussport.sample`: the entry for this solver and the budget the sigmas cost
              (or ``nfe``) sets the teleport level, the grid and the solver options (leave those at
              their defaults). Grids starting below the recipe's ``sigma_max`` (img2img) are solved
              without teleport. ``sigma_skip="auto"`` and ``recipe`` work for decreasing sigmas with
              ``parameterization="ve"``.

    Returns:
        ``f(model, x, sigmas, extra_args=None, callback=None, disable=None, *, <options>)`` with a
        real signature (``inspect.signature`` lists every option), running under ``torch.no_grad()``,
        calling ``callback`` exactly once per interval of ``sigmas`` with the keys ``x, i, sigma,
        sigma_hat, denoised`` (teleported intervals included: ``denoised`` is the Gaussian's).

    Raises:
        TypeError: for an option neither the solver nor the adapter has.
    """
    name, solver_defaults, build = _solver_options(solver)
    registered_defaults = dict(solver_defaults)
    clash = set(solver_defaults) & set(_ADAPTER_OPTIONS)
    if clash:
        raise TypeError(f"solver {name!r} has options named like adapter options: {sorted(clash)}.")
    unknown = set(options) - set(solver_defaults) - set(_ADAPTER_OPTIONS)
    if unknown:
        accepted = ", ".join(sorted(set(solver_defaults) | set(_ADAPTER_OPTIONS)))
        raise TypeError(
            f"sampler for {name!r} has no option(s) {sorted(unknown)}; its options are: {accepted}."
        )
    solver_defaults = {k: options.get(k, v) for k, v in solver_defaults.items()}
    adapter_defaults = {k: options.get(k, v) for k, v in _ADAPTER_OPTIONS.items()}
    if not any(v is _P.empty for v in solver_defaults.values()):
        build(solver_defaults)  # fail now, not at the first image, on a bad option value
    signature = _signature(solver_defaults, adapter_defaults)
    files = StatisticsCache()  # this sampler's statistics files: a path given per image is read once

    def sampler(*args: Any, **kwargs: Any) -> Tensor:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        teleport = _deprecation.renamed_argument(
            sampler.__name__,
            "schedule",
            "teleport",
            a["schedule"],
            a["teleport"],
            adapter_defaults["teleport"],
        )
        solver_obj = build({k: a[k] for k in solver_defaults})
        with torch.no_grad():
            return _run(
                a["model"],
                a["x"],
                a["sigmas"],
                a["extra_args"],
                a["callback"],
                a["disable"],
                solver_obj,
                a["warm_start"],
                a["sigma_skip"],
                teleport,
                a["parameterization"],
                files,
                name,
                {
                    "probes": a["probes"],
                    "recipe": a["recipe"],
                    "nfe": a["nfe"],
                    "registered": name if isinstance(solver, str) else None,
                    "changed": [k for k in solver_defaults if not _same(a[k], registered_defaults[k])],
                },
            )

    sampler.__signature__ = signature  # type: ignore[attr-defined]
    sampler.__name__ = f"sample_{name}"
    sampler.__qualname__ = sampler.__name__
    sampler.__module__ = __name__
    solver_doc = (
        inspect.getdoc(
            build(solver_defaults)
            if not any(v is _P.empty for v in solver_defaults.values())
            else solver_class(name)[0]
        )
        or ""
    )
    sampler.__doc__ = (
        f"gaussport solver {name!r} with k-diffusion's sampler signature (see "
        "gaussport.adapters.k_diffusion).\n\n" + solver_doc.split("\n\n")[0]
    )
    return sampler


def _same(value: Any, default: Any) -> bool:
    """Whether a solver option is left at its registered default (a recipe's entry sets the options)."""
    if value is default:
        return True
    try:
        return bool(value == default)
    except Exception:  # an array-like option: compared as given, never equal to a scalar default
        return False


def samplers() -> dict[str, Callable[..., Tensor]]:
    """Deprecated: ``{f"sample_{n}": as_k_diffusion_sampler(n) for n in gaussport.solvers.available()}``."""
    _deprecation.warn("gaussport.adapters.k_diffusion.samplers()", "as_k_diffusion_sampler(name)")
    return {f"sample_{name}": as_k_diffusion_sampler(name) for name in available()}


def __getattr__(attr: str) -> Callable[..., Tensor]:
    # Deprecated: sample_<name> for solvers registered by plugins (built-ins are defined below).
    if attr.startswith("sample_") and attr[len("sample_") :] in available():
        _deprecation.warn(f"gaussport.adapters.k_diffusion.{attr}", f"as_k_diffusion_sampler({attr[7:]!r})")
        return as_k_diffusion_sampler(attr[len("sample_") :])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# The drop-in namespace: k-diffusion's sample_<name> for every built-in solver (a test checks that
# none is missing). Solvers registered by plugins: as_k_diffusion_sampler(name).
sample_ddim = as_k_diffusion_sampler("ddim")
sample_dpm_solver_v3 = as_k_diffusion_sampler("dpm_solver_v3")
sample_dpmpp_2m = as_k_diffusion_sampler("dpmpp_2m")
sample_dpmpp_2m_taylor = as_k_diffusion_sampler("dpmpp_2m_taylor")
sample_dpmpp_2s = as_k_diffusion_sampler("dpmpp_2s")
sample_dpmpp_3m = as_k_diffusion_sampler("dpmpp_3m")
sample_dpmpp_3m_fixed = as_k_diffusion_sampler("dpmpp_3m_fixed")
sample_euler = as_k_diffusion_sampler("euler")
sample_heun = as_k_diffusion_sampler("heun")
sample_ipndm = as_k_diffusion_sampler("ipndm")
sample_ipndm_v = as_k_diffusion_sampler("ipndm_v")
sample_unipc_bh1 = as_k_diffusion_sampler("unipc_bh1")
sample_unipc_bh2 = as_k_diffusion_sampler("unipc_bh2")
sample_unipc_vary_coeff = as_k_diffusion_sampler("unipc_vary_coeff")
