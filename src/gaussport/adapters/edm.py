"""EDM networks (Karras et al. 2022): the interface of ``EDMPrecond``, ``VPPrecond``, ``iDDPMPrecond``...

An EDM preconditioned network already is a VE denoiser: ``net(x, sigma, class_labels=None,
force_fp32=False, **model_kwargs) -> D(x, sigma)`` in float32, with attributes ``sigma_min``,
``sigma_max`` and ``round_sigma(sigma)`` (docs/peer-conventions.md#edm). This adapter adds what EDM's
own sampler does around it and k-diffusion samplers do not:

* ``round_sigma`` applied to the **whole grid** (and the teleport level) before integrating, so the
  network is only evaluated at levels it supports (iDDPM nets snap to 1000 discrete levels; identity
  for the others). The rounded grid is the one integrated and reported (``Solution.sigmas``);
* class labels (one-hot ``[B, label_dim]`` as EDM expects, or indices) passed to every call, and the
  same labels select the per-class Gaussian of a
  :class:`~gaussport.adapters.guidance.ClassConditionalGaussian`;
* the sigma range: the net's ``sigma_min``/``sigma_max``, or 0.002/80 where it says 0/inf (EDMPrecond)
  or has none (EDM2).

No NVlabs code is used or needed (its licence is non-commercial); any module with that interface works.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import _deprecation, grids
from .._checks import Grid, as_grid
from ..sampling import Callback, Solution, sample, solve
from ..solvers import Solver
from ._teleport import check_sample_shape, float_attribute, resolve_warm_start
from .guidance import ClassConditionalGaussian

__all__ = ["EDMDenoiser", "edm_sample", "DEFAULT_SIGMA_MIN", "DEFAULT_SIGMA_MAX"]

logger = logging.getLogger("gaussport")

DEFAULT_SIGMA_MIN = 0.002
DEFAULT_SIGMA_MAX = 80.0


class EDMDenoiser:
    """An EDM-interface network as a gaussport denoiser, with class labels bound.

    ``D(x, sigma) = net(x, sigma, class_labels, **model_kwargs)``; ``sigma`` is the ``[B]`` tensor
    gaussport passes (EDM nets reshape it to ``[B, 1, 1, 1]``).

    Args:
        net: a module with EDM's ``forward(x, sigma, class_labels=None, ...)``.
        class_labels: one-hot ``[B, label_dim]`` labels (or ``[B]`` indices, converted to one-hot when
            the net has a ``label_dim``) for class-conditional nets; ``None`` for unconditional ones.
        unconditional: sample a class-conditional net unconditionally with all-zero label rows --
            the null label of nets trained with label dropout (classifier-free guidance), and what
            EDM's own preconditioners substitute for missing labels. Without it, a conditional net
            without labels is an error (a forgotten label is a silent wrong result otherwise).
        **model_kwargs: further keyword arguments for every call (e.g. ``force_fp32=True``).

    Raises:
        ValueError: if a class-conditional net (``label_dim > 0``) gets no labels and
            ``unconditional`` is not set, or labels and ``unconditional`` are both given.
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        class_labels: Tensor | None = None,
        *,
        unconditional: bool = False,
        **model_kwargs: Any,
    ) -> None:
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, sigma, class_labels); got {type(net).__name__}.")
        self.net = net
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        self.class_labels = self._one_hot(class_labels)
        if unconditional and class_labels is not None:
            raise ValueError("pass either class_labels or unconditional=True, not both.")
        self.unconditional = bool(unconditional) and self.label_dim > 0
        self.model_kwargs = model_kwargs
        self._labels_on: dict[torch.device, Tensor] = {}

    def _one_hot(self, labels: Tensor | None) -> Tensor | None:
        if labels is None:
            return None
        t = torch.as_tensor(labels)
        if t.ndim == 1 and not t.is_floating_point() and self.label_dim:
            return torch.nn.functional.one_hot(t.long(), self.label_dim).to(torch.float32)
        if self.label_dim and (t.ndim != 2 or t.shape[1] != self.label_dim):
            raise ValueError(
                f"class_labels must be one-hot [B, {self.label_dim}] or indices [B] for this net; "
                f"got shape {tuple(t.shape)}."
            )
        return t

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        if "class_labels" in extra:
            labels = self._one_hot(extra.pop("class_labels"))
            labels = None if labels is None else labels.to(x.device)
        elif self.class_labels is not None:
            labels = self._labels_on.get(x.device)
            if labels is None:  # one host-to-device copy per device, not one per call
                labels = self._labels_on.setdefault(x.device, self.class_labels.to(x.device))
        elif self.unconditional:
            labels = x.new_zeros((x.shape[0], self.label_dim), dtype=torch.float32)
        else:
            labels = None
        if self.label_dim and labels is None:
            raise ValueError(
                f"this EDM net is class-conditional (label_dim={self.label_dim}); pass class_labels (one-hot "
                f"[B, {self.label_dim}] or indices [B]) to EDMDenoiser / edm_sample, or "
                "EDMDenoiser(net, unconditional=True) for the null label of a label-dropout net."
            )
        if labels is not None and labels.shape[0] != x.shape[0]:
            raise ValueError(
                f"{labels.shape[0]} class labels for a batch of {x.shape[0]}; pass one label per sample."
            )
        return self.net(x, sigma, labels, **self.model_kwargs, **extra)

    # ------------------------------------------------------------------ sigma range and rounding
    @property
    def sigma_min(self) -> float:
        """The net's smallest level, or 0.002 where it says 0 or has none (EDMPrecond, EDM2)."""
        value = float_attribute(self.net, "sigma_min")
        return DEFAULT_SIGMA_MIN if value is None or value <= 0 else value

    @property
    def sigma_max(self) -> float:
        """The net's largest level, or 80 where it says inf or has none."""
        value = float_attribute(self.net, "sigma_max")
        return DEFAULT_SIGMA_MAX if value is None or not math.isfinite(value) else value

    def round_sigma(self, sigmas: Tensor | Sequence[float]) -> Grid:
        """The grid with the net's ``round_sigma`` applied to every positive level (0 stays 0).

        Levels that round onto the same value are merged (the solver cannot step from a level to
        itself); the merge is logged. Nets without ``round_sigma`` leave the grid unchanged.
        """
        grid = as_grid(sigmas)
        rounder = getattr(self.net, "round_sigma", None)
        if rounder is None:
            return grid
        positive = [s for s in grid if s > 0]
        rounded = (
            [
                float(v)
                for v in torch.as_tensor(rounder(torch.tensor(positive, dtype=torch.float64)))
                .detach()
                .reshape(-1)
                .to("cpu", torch.float64)
                .tolist()
            ]
            if positive
            else []
        )
        out: list[float] = []
        for s in rounded:
            if not out or s < out[-1]:
                out.append(s)
        if len(out) < len(rounded):
            logger.info(
                "round_sigma merged %d grid levels that round to the same value", len(rounded) - len(out)
            )
        if grid[-1] == 0.0:
            out.append(0.0)
        return as_grid(out, name="rounded sigmas")

    def grid(
        self,
        num_steps: int = 18,
        sigma_min: float = DEFAULT_SIGMA_MIN,
        sigma_max: float = DEFAULT_SIGMA_MAX,
        rho: float = 7.0,
    ) -> Grid:
        """EDM's time discretisation: Karras levels clamped to the net's range, rounded, then 0."""
        lo = max(float(sigma_min), self.sigma_min)
        hi = min(float(sigma_max), self.sigma_max)
        return self.round_sigma(grids.karras(num_steps, lo, hi, rho))

    def __repr__(self) -> str:
        return f"EDMDenoiser({type(self.net).__name__}, label_dim={self.label_dim})"


def edm_sample(
    net: Callable[..., Tensor] | EDMDenoiser,
    latents: Tensor,
    class_labels: Tensor | None = None,
    *,
    num_steps: int = 18,
    sigma_min: float = DEFAULT_SIGMA_MIN,
    sigma_max: float = DEFAULT_SIGMA_MAX,
    rho: float = 7.0,
    sigmas: Tensor | Sequence[float] | None = None,
    solver: Solver | str = "heun",
    warm_start: Any = None,
    sigma_skip: float | str | None = None,
    teleport: str = "truncate",
    callback: Callback | None = None,
    disable: bool | None = None,
    dtype: torch.dtype = torch.float64,
    model_dtype: torch.dtype = torch.float32,
    schedule: str | None = None,
    probes: Any = None,
    recipe: Any = None,
    nfe: int | None = None,
    **options: Any,
) -> Solution:
    """Sample an EDM net as EDM's ``edm_sampler`` does (without churn), with any solver and a warm start.

    ``x = latents * sigmas[0]`` (float64 by default, as EDM), then the solver over the rounded grid;
    with ``warm_start``, the exact Gaussian flow to ``round_sigma(sigma_skip)`` first. Runs under
    ``torch.no_grad()`` (as k-diffusion's samplers): no autograd graph is kept across evaluations.

    Args:
        net: an EDM-interface network (or an :class:`EDMDenoiser`).
        latents: standard normal noise ``[B, C, H, W]``.
        class_labels: one-hot labels (or indices) for class-conditional nets; they also select
            per-class Gaussians of a :class:`ClassConditionalGaussian` warm start. For an
            unconditional sample of a label-dropout net pass ``EDMDenoiser(net, unconditional=True)``.
        num_steps: EDM's Karras grid (clamped to the net's range).
        sigma_min: EDM's Karras grid (clamped to the net's range).
        sigma_max: EDM's Karras grid (clamped to the net's range).
        rho: EDM's Karras grid (clamped to the net's range).
        sigmas: an explicit grid instead (rounded too).
        solver: a registered solver name or instance (``"heun"`` = EDM's deterministic sampler:
            ``2 num_steps - 1`` evaluations).
        warm_start: a Gaussian fitted to the data in the net's units (EDM images in [-1, 1]), a
            statistics path, or a :class:`ClassConditionalGaussian`.
        sigma_skip: the teleport level (rounded with ``round_sigma``), or ``"auto"`` (as in
            :func:`gaussport.sample`; not rounded).
        teleport: ``"truncate"`` or ``"respace"``, as in :func:`gaussport.sample`.
        callback: as in :func:`gaussport.solve`.
        disable: as in :func:`gaussport.solve`.
        dtype: solver-state dtype (float64 like EDM).
        model_dtype: the dtype the net receives (EDM nets compute in float32).
        schedule: deprecated name of ``teleport``.
        probes: with ``sigma_skip="auto"``, as in :func:`gaussport.sample`.
        recipe: a tuned :class:`~gaussport.tuning.Recipe` or its file, as in :func:`gaussport.sample`
            (its grid is used as written, not rounded).
        nfe: with ``recipe``, the entry's budget (default: what the grid costs).
        **options: solver options.

    Returns:
        A :class:`~gaussport.Solution`; ``sigmas`` is the rounded grid the solver integrated.
    """
    teleport = _deprecation.renamed_argument(
        "edm_sample", "schedule", "teleport", schedule, teleport, "truncate"
    )
    with torch.no_grad():
        return _edm_sample(
            net,
            latents,
            class_labels,
            num_steps,
            sigma_min,
            sigma_max,
            rho,
            sigmas,
            solver,
            warm_start,
            sigma_skip,
            teleport,
            callback,
            disable,
            dtype,
            model_dtype,
            options,
            tuning={"probes": probes, "recipe": recipe, "nfe": nfe},
        )


def _edm_sample(
    net: Any,
    latents: Tensor,
    class_labels: Tensor | None,
    num_steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    sigmas: Any,
    solver: Solver | str,
    warm_start: Any,
    sigma_skip: float | None,
    teleport: str,
    callback: Callback | None,
    disable: bool | None,
    dtype: torch.dtype,
    model_dtype: torch.dtype,
    options: dict[str, Any],
    *,
    tuning: dict[str, Any] | None = None,
) -> Solution:
    tuning = {k: v for k, v in (tuning or {}).items() if v is not None}
    denoiser = net if isinstance(net, EDMDenoiser) else EDMDenoiser(net, class_labels)
    if isinstance(net, EDMDenoiser) and class_labels is not None:
        denoiser = EDMDenoiser(net.net, class_labels, **net.model_kwargs)
    grid = (
        denoiser.round_sigma(sigmas)
        if sigmas is not None
        else denoiser.grid(num_steps, sigma_min, sigma_max, rho)
    )
    if isinstance(warm_start, ClassConditionalGaussian):
        labels = denoiser.class_labels
        warm = warm_start.select(labels)
    else:
        warm = resolve_warm_start(warm_start)
    x = latents.to(dtype) * grid[0]
    if warm is None:
        if sigma_skip is not None or tuning:
            raise ValueError(
                "sigma_skip, probes, recipe or nfe was given without warm_start; pass the statistics to "
                "teleport with."
            )
        return solve(
            denoiser,
            x,
            grid,
            solver,
            callback=callback,
            disable=disable,
            dtype=dtype,
            model_dtype=model_dtype,
            **options,
        )
    if sigma_skip is None and "recipe" not in tuning:
        raise ValueError(
            "warm_start needs sigma_skip, the noise level to teleport to (or sigma_skip='auto')."
        )
    check_sample_shape(warm, latents.shape[1:])
    if sigma_skip is None or isinstance(sigma_skip, str):
        skip: Any = sigma_skip
    else:
        skip = denoiser.round_sigma([float(sigma_skip)])[0] if float(sigma_skip) > 0 else 0.0
        skip = min(skip, grid[0])
    return sample(
        denoiser,
        x,
        grid,
        solver,
        warm_start=warm,
        sigma_skip=skip,
        teleport=teleport,
        callback=callback,
        disable=disable,
        dtype=dtype,
        model_dtype=model_dtype,
        **tuning,
        **options,
    )
