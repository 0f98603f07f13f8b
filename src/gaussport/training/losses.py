"""Training losses as plain functions of a denoiser and a clean batch, usable in any loop.

* :func:`edm_loss` -- EDM's denoising score matching loss (Karras et al. 2022, eq. 2 and Table 1):
  ``ln sigma ~ N(p_mean, p_std^2)``, ``x = x0 + sigma eps``, ``lambda(sigma) |D(x, sigma) - x0|^2``.
* :func:`bootstrapped_dsm_loss` -- opt-in, experimental: the denoising target blended above a burn-in
  level with a bootstrap target built from a teacher's estimate at the next lower level, gated by the
  data's Gaussian (our reconstruction of Bootstrapped Score Matching from the abstract of Kumar,
  Nagaraj & Sarkar, arXiv 2502.10354; docs/training.md#bootstrapped-score-matching says what is
  theirs and what is ours).
* :func:`gated_bootstrap_target` -- that bootstrap target alone (denoiser space).

Every function takes a gaussport denoiser ``D(x, sigma, **model_kwargs) -> x0`` (VE, ``sigma`` of
shape ``[B]``); the losses are computed in at least float32 whatever the autocast dtype of the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._checks import as_grid
from ..analytic import Gaussian, GaussianMixture
from ..analytic.covariance import factor_dtype

__all__ = ["bootstrapped_dsm_loss", "edm_loss", "gated_bootstrap_target"]

Weighting = str | Callable[[Tensor], Tensor]
_WEIGHTINGS = ("edm", "denoiser", "auto")


# ---------------------------------------------------------------------------------------------- checks
def _check_x0(x0: Any) -> Tensor:
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise TypeError(
            f"x0 must be a floating-point tensor [B, *sample_shape] of clean data; got "
            f"{getattr(x0, 'dtype', type(x0).__name__)}."
        )
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(
            f"x0 must have shape [B, *sample_shape] with B >= 1; got {tuple(x0.shape)} (one sample x is "
            "x.unsqueeze(0))."
        )
    if not bool(torch.isfinite(x0).all()):
        raise ValueError("x0 contains NaN or infinite values; clean the data before training.")
    return x0


def _check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}.")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}.")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value}.")
    return value


def _check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}.")
    return generator


def _check_weighting(weighting: Any) -> Weighting:
    if callable(weighting):
        return weighting
    if not isinstance(weighting, str) or weighting not in _WEIGHTINGS:
        raise ValueError(
            f"weighting must be one of {_WEIGHTINGS} or a callable sigma -> weight [B]; got {weighting!r}."
        )
    return weighting


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal draws on the generator's device (reproducible across devices), moved to ``like``'s."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(like.device)


def _weights(weighting: Weighting, denoiser: Any, sigma: Tensor, sigma_data: float) -> Tensor:
    """Per-sample loss weights ``[B]`` in float32 or wider."""
    if weighting == "auto":
        weighting = "denoiser" if callable(getattr(denoiser, "loss_weight", None)) else "edm"
    if weighting == "edm":
        d2 = sigma_data * sigma_data
        w = (sigma * sigma + d2) / (sigma * sigma * d2)
    elif weighting == "denoiser":
        loss_weight = getattr(denoiser, "loss_weight", None)
        if not callable(loss_weight):
            raise TypeError(
                f"weighting='denoiser' needs a denoiser with a loss_weight(sigma) method (e.g. a "
                f"GaussianResidualDenoiser); {type(denoiser).__name__} has none. Use weighting='edm'."
            )
        w = loss_weight(sigma)
    else:
        assert callable(weighting)
        w = weighting(sigma)
    if not isinstance(w, Tensor) or w.shape != sigma.shape:
        raise ValueError(
            f"the loss weighting must return a tensor of shape {tuple(sigma.shape)} (one weight per "
            f"sample); got {getattr(w, 'shape', type(w).__name__)}."
        )
    return w.to(torch.promote_types(w.dtype, torch.float32))


def _weighted_error(denoised: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """``weight * mean over elements of (denoised - target)^2``, per sample ``[B]``, in float32 or wider."""
    work = torch.promote_types(target.dtype, torch.float32)
    diff = denoised.to(work) - target.to(work)
    return weight.to(work) * diff.square().reshape(diff.shape[0], -1).mean(-1)


def _call(denoiser: Callable[..., Tensor], x: Tensor, sigma: Tensor, what: str, **kwargs: Any) -> Tensor:
    out = denoiser(x, sigma, **kwargs)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ValueError(
            f"{what} returned {getattr(out, 'shape', type(out).__name__)}; a denoiser returns E[x0 | x] "
            f"with x's shape {tuple(x.shape)}."
        )
    return out


# ---------------------------------------------------------------------------------------------- EDM
def edm_loss(
    denoiser: Callable[..., Tensor],
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = 0.5,
    weighting: Weighting = "edm",
    sigma: Tensor | None = None,
    per_sample: bool = False,
    **model_kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """EDM's denoising loss: ``E_sigma E_eps lambda(sigma) mean |D(x0 + sigma eps, sigma) - x0|^2``.

    Order: one denoiser evaluation on the batch.

    Args:
        denoiser: ``D(x, sigma, **model_kwargs) -> x0``, e.g. a :class:`GaussianResidualDenoiser`.
        x0: clean data ``[B, *sample_shape]``.
        generator: the source of sigma and noise (drawn on its device); ``None``: the global RNG.
            Draw order: the ``B`` normals of ``ln sigma`` (unless ``sigma`` is given), then ``eps``.
        p_mean: mean of ``ln sigma`` (EDM's -1.2).
        p_std: standard deviation of ``ln sigma`` (EDM's 1.2).
        sigma_data: the data standard deviation in EDM's weighting.
        weighting: ``"edm"`` (``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``), ``"denoiser"``
            (``denoiser.loss_weight(sigma)``; ``1 / c_out^2`` for a Gaussian-residual denoiser),
            ``"auto"`` (``"denoiser"`` when the denoiser has ``loss_weight``, else ``"edm"``) or a
            callable ``sigma [B] -> weight [B]``.
        sigma: explicit noise levels ``[B]`` (then ``p_mean`` and ``p_std`` are unused).
        per_sample: also return the per-sample losses ``[B]``.
        **model_kwargs: conditioning passed to the denoiser (e.g. class labels).

    Returns:
        The mean loss (a scalar, float32 or wider), or ``(mean, per_sample_losses)``.

    Raises:
        TypeError: a non-tensor or non-float ``x0``, a bad generator or weighting type.
        ValueError: a bad shape, non-finite data, ``p_std < 0``, ``sigma_data <= 0``, ``sigma`` of
            the wrong shape or not positive, an unknown weighting name.
    """
    x0 = _check_x0(x0)
    generator = _check_generator(generator)
    p_mean = _check_real(p_mean, "p_mean")
    p_std = _check_real(p_std, "p_std", low=0.0)
    sigma_data = _check_real(sigma_data, "sigma_data")
    if sigma_data <= 0.0:
        raise ValueError(f"sigma_data must be > 0; got {sigma_data}.")
    weighting = _check_weighting(weighting)
    batch = x0.shape[0]
    work = torch.promote_types(x0.dtype, torch.float32)
    if sigma is None:
        sigma = torch.exp(p_mean + p_std * _randn((batch,), generator, x0))
    else:
        if not isinstance(sigma, Tensor) or not sigma.is_floating_point():
            raise TypeError(f"sigma must be a floating-point tensor [B]; got {type(sigma).__name__}.")
        if sigma.shape != (batch,):
            raise ValueError(
                f"sigma must have shape [{batch}] (one level per sample); got {tuple(sigma.shape)}."
            )
        if not bool(torch.isfinite(sigma).all() & (sigma > 0).all()):
            raise ValueError("sigma must be finite and > 0 for every sample (the loss weight is 1/sigma^2).")
        sigma = sigma.to(device=x0.device, dtype=work)
    eps = _randn(tuple(x0.shape), generator, x0)
    view = (-1,) + (1,) * (x0.ndim - 1)
    x = (x0.to(work) + sigma.reshape(view) * eps).to(x0.dtype)
    denoised = _call(denoiser, x, sigma, "the denoiser", **model_kwargs)
    losses = _weighted_error(denoised, x0, _weights(weighting, denoiser, sigma, sigma_data))
    mean = losses.mean()
    return (mean, losses) if per_sample else mean


# ---------------------------------------------------------------------------------------------- BSM
def _refuse_analytic_teacher(teacher: Any, gaussian: Gaussian) -> None:
    # A bound method (gaussian.__call__, gaussian.score) is the analytic model too.
    owner = getattr(teacher, "__self__", teacher)
    if isinstance(owner, Gaussian) or owner is gaussian:
        raise ValueError(
            "the teacher of bootstrapped_dsm_loss must not be the analytic Gaussian: with the Gaussian's "
            "exact score as teacher, the gated bootstrap target equals the Gaussian's score at the upper "
            "level exactly, so the loss would distil the network onto the Gaussian instead of the data. "
            "Pass a frozen or EMA copy of the model being trained (the model itself is evaluated under "
            "no_grad if you pass it)."
        )
    if isinstance(owner, GaussianMixture):
        raise ValueError(
            "the teacher of bootstrapped_dsm_loss must be a frozen or EMA copy of the model being "
            "trained, not an analytic model (a GaussianMixture teacher would train the network onto "
            "that mixture, not the data)."
        )


def gated_bootstrap_target(
    teacher: Callable[..., Tensor],
    gaussian: Gaussian,
    x_s: Tensor,
    sigma_s: Tensor,
    x_t: Tensor,
    sigma_t: Tensor,
    **model_kwargs: Any,
) -> Tensor:
    """The Gaussian-gated bootstrap target at ``(x_t, sigma_t)`` (denoiser space) from a teacher at ``x_s``.

    With ``x_t = x_s + sqrt(sigma_t^2 - sigma_s^2) eps`` and the teacher's score
    ``s_hat = (teacher(x_s, sigma_s) - x_s) / sigma_s^2``, the score-space target is
    ``T = (Sigma + sigma_t^2 I)^-1 [(Sigma + sigma_s^2 I) s_hat + x_s - x_t]`` and the
    denoiser-space target is ``x_t + sigma_t^2 T``. With the exact teacher its conditional mean
    given ``x_t`` is the exact denoiser at ``sigma_t`` (for any data); on Gaussian data with the
    exact Gaussian teacher it equals the Gaussian denoiser exactly (zero variance)
    (docs/training.md#the-gated-target).

    The teacher is evaluated under ``torch.no_grad``; the covariance products run outside autocast in
    at least float32 (factors in float64), as one stacked ``f(Sigma)`` application: ``O(B d^2)``
    dense, ``O(B d)`` diagonal, ``O(B d r)`` low rank, no ``d x d`` work beyond the dense case's own.

    Args:
        teacher: a denoiser ``D(x, sigma, **model_kwargs)`` (a frozen or EMA copy of the model).
        gaussian: the data's Gaussian: it defines the gate.
        x_s: the lower-level state ``[B, *shape]``.
        sigma_s: its levels ``[B]`` (> 0).
        x_t: the upper-level state ``[B, *shape]``.
        sigma_t: its levels ``[B]`` (``sigma_t > sigma_s``).
        **model_kwargs: conditioning passed to the teacher.

    Returns:
        The target ``[B, *shape]`` (detached), dtype of ``x_t`` promoted to at least float32.
    """
    _refuse_analytic_teacher(teacher, gaussian)
    work = torch.promote_types(x_t.dtype, torch.float32)
    batch = x_t.shape[0]
    with torch.no_grad():
        d_teacher = _call(teacher, x_s, sigma_s, "the teacher", **model_kwargs)
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            fdt = factor_dtype(x_t.device)
            s2 = sigma_s.to(device=x_t.device, dtype=fdt).square().unsqueeze(-1)
            t2 = sigma_t.to(device=x_t.device, dtype=fdt).square().unsqueeze(-1)
            xs = x_s.to(work).reshape(batch, -1)
            xt = x_t.to(work).reshape(batch, -1)
            score_s = (d_teacher.to(work).reshape(batch, -1) - xs) / s2.to(work)
            # One stacked application: [A s_hat ; (Sigma + t2)^-1 (x_s - x_t)], A = (lam + s2) / (lam + t2).
            stacked = torch.cat([score_s, xs - xt])

            def factor(lam: Tensor) -> Tensor:
                gate = ((lam + s2) / (lam + t2)).clamp(0.0, 1.0)
                return torch.cat([gate, 1.0 / (lam + t2)])

            both = gaussian.cov.apply(stacked, factor)
            score_t = both[:batch] + both[batch:]
            target = xt + t2.to(work) * score_t
    return target.reshape(x_t.shape)


def bootstrapped_dsm_loss(
    denoiser: Callable[..., Tensor],
    x0: Tensor,
    *,
    teacher: Callable[..., Tensor],
    gaussian: Gaussian,
    levels: Tensor | list[float] | tuple[float, ...],
    mix: float = 0.5,
    sigma_burn: float = 0.5,
    generator: torch.Generator | None = None,
    weighting: Weighting = "auto",
    sigma_data: float = 0.5,
    per_sample: bool = False,
    **model_kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """Denoising score matching with a Gaussian-gated bootstrap target above a burn-in level (opt-in).

    Per sample: a level index ``k`` uniform in ``1..K-1`` of the increasing grid ``levels``;
    ``x_s = x0 + sigma_{k-1} eps1``, ``x_t = x_s + sqrt(sigma_k^2 - sigma_{k-1}^2) eps2`` (one forward
    Markov path); the target is ``x0`` (DSM) at or below ``sigma_burn`` and
    ``(1 - mix) x0 + mix T_A`` above it, ``T_A`` = :func:`gated_bootstrap_target` of the teacher at
    ``(x_s, sigma_{k-1})``; the loss is ``weight(sigma_k) mean |D(x_t, sigma_k) - target|^2``.

    This is our reconstruction of Bootstrapped Score Matching (Kumar, Nagaraj & Sarkar, arXiv
    2502.10354, whose exact procedure is not published in the part available to us); the defaults
    ``mix = 0.5`` and ``sigma_burn = 0.5`` (unit-variance data) come from our own measurements
    (docs/training.md#bootstrapped-score-matching). Expect a modest gain, mainly with few data.

    Order: one denoiser evaluation with gradients and one teacher evaluation without (skipped when
    ``mix = 0`` or no sample is above ``sigma_burn``), plus one ``f(Sigma)`` application.

    Args:
        denoiser: the model being trained, ``D(x, sigma, **model_kwargs) -> x0``.
        x0: clean data ``[B, *gaussian.shape]``.
        teacher: a frozen or EMA copy of the model (or the model itself: it is evaluated under
            ``no_grad``, so no gradient flows through the target). Never the analytic Gaussian
            (refused: the target would collapse onto the Gaussian's denoiser).
        gaussian: the data's Gaussian (the gate).
        levels: strictly increasing noise levels, ``levels[0] > 0``, at least two.
        mix: weight of the bootstrap target above ``sigma_burn``, in ``[0, 1]``; 0 is plain DSM.
        sigma_burn: levels at or below it use the DSM target only.
        generator: source of the level indices and noises (drawn on its device); draw order:
            ``k`` (``B`` integers), ``eps1``, ``eps2``.
        weighting: as in :func:`edm_loss` (default ``"auto"``: ``denoiser.loss_weight`` when it
            exists, else EDM's).
        sigma_data: the data standard deviation of EDM's weighting.
        per_sample: also return the per-sample losses ``[B]``.
        **model_kwargs: conditioning passed to the denoiser and the teacher.

    Returns:
        The mean loss (a scalar), or ``(mean, per_sample_losses)``.

    Raises:
        TypeError: bad types of ``x0``, ``gaussian``, ``teacher``, ``generator``, ``weighting``.
        ValueError: the analytic Gaussian (or a mixture) as teacher; ``levels`` not strictly
            increasing, not positive or shorter than 2; ``mix`` outside ``[0, 1]``; a negative
            ``sigma_burn``; ``x0`` of another sample shape than the Gaussian.
    """
    x0 = _check_x0(x0)
    if not isinstance(gaussian, Gaussian):
        raise TypeError(
            f"gaussian must be a gaussport.analytic.Gaussian (the gate of the bootstrap target); got "
            f"{type(gaussian).__name__}."
        )
    _refuse_analytic_teacher(teacher, gaussian)
    if not callable(teacher):
        raise TypeError(f"teacher must be a denoiser D(x, sigma) -> x0; got {type(teacher).__name__}.")
    if tuple(x0.shape[1:]) != gaussian.shape:
        raise ValueError(
            f"x0 has sample shape {tuple(x0.shape[1:])} but the Gaussian's is {gaussian.shape}; fit the "
            "Gaussian to the same data (same units and shape)."
        )
    grid = as_grid(levels, name="levels", increasing=True)
    if len(grid) < 2:
        raise ValueError(f"levels must hold at least two noise levels (one step up); got {len(grid)}.")
    mix = _check_real(mix, "mix", low=0.0, high=1.0)
    sigma_burn = _check_real(sigma_burn, "sigma_burn", low=0.0)
    sigma_data = _check_real(sigma_data, "sigma_data")
    if sigma_data <= 0.0:
        raise ValueError(f"sigma_data must be > 0; got {sigma_data}.")
    generator = _check_generator(generator)
    weighting = _check_weighting(weighting)

    batch = x0.shape[0]
    work = torch.promote_types(x0.dtype, torch.float32)
    grid_t = torch.tensor(grid, dtype=torch.float64)
    gen_device = generator.device if generator is not None else x0.device
    k = torch.randint(1, len(grid), (batch,), generator=generator, device=gen_device).to("cpu")
    sigma_s = grid_t[k - 1].to(device=x0.device, dtype=work)
    sigma_t = grid_t[k].to(device=x0.device, dtype=work)
    step = (grid_t[k].square() - grid_t[k - 1].square()).sqrt().to(device=x0.device, dtype=work)
    eps1 = _randn(tuple(x0.shape), generator, x0)
    eps2 = _randn(tuple(x0.shape), generator, x0)
    view = (-1,) + (1,) * (x0.ndim - 1)
    x_s = x0.to(work) + sigma_s.reshape(view) * eps1
    x_t = x_s + step.reshape(view) * eps2

    target = x0.to(work)
    above = grid_t[k] > sigma_burn
    if mix > 0.0 and bool(above.any()):
        rows = torch.nonzero(above).squeeze(-1).to(x0.device)
        # Per-sample conditioning (e.g. labels [B]) follows the rows the teacher sees.
        kwargs_rows = {
            key: value[rows]
            if isinstance(value, Tensor) and value.ndim and value.shape[0] == batch
            else value
            for key, value in model_kwargs.items()
        }
        boot = gated_bootstrap_target(
            teacher,
            gaussian,
            x_s[rows].to(x0.dtype),
            sigma_s[rows],
            x_t[rows].to(x0.dtype),
            sigma_t[rows],
            **kwargs_rows,
        )
        target = target.index_copy(0, rows, (1.0 - mix) * target[rows] + mix * boot.to(work))
    denoised = _call(denoiser, x_t.to(x0.dtype), sigma_t, "the denoiser", **model_kwargs)
    losses = _weighted_error(denoised, target.detach(), _weights(weighting, denoiser, sigma_t, sigma_data))
    mean = losses.mean()
    return (mean, losses) if per_sample else mean
