"""The denoiser protocol and the one place where solvers meet the model.

A *denoiser* is any callable ``D(x, sigma) -> x0_hat`` in VE coordinates: ``x = x0 + sigma * eps``,
``x`` of shape ``[B, ...]`` and ``sigma`` a tensor of shape ``[B]`` (the k-diffusion/EDM convention).
It returns the posterior mean ``E[x0 | x]`` with the shape of ``x``. See docs/conventions.md.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Denoiser", "FlowMap", "DenoiserCall", "CountingDenoiser", "check_output", "model_device"]


@runtime_checkable
class Denoiser(Protocol):
    """``D(x, sigma) -> E[x0 | x_sigma = x]`` in VE coordinates (docs/conventions.md).

    Conditioning (labels, prompts, guidance) is bound at construction, e.g. with
    ``functools.partial`` or an adapter, not passed per call.
    """

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Denoise.

        Args:
            x: noisy state, shape ``[B, *sample_shape]``, VE coordinates.
            sigma: noise level per sample, shape ``[B]``.

        Returns:
            The denoised estimate, same shape as ``x``.
        """
        ...


@runtime_checkable
class FlowMap(Protocol):
    """An exact (closed-form) transport of the probability-flow ODE, e.g. ``analytic.Gaussian``."""

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor: ...


class DenoiserCall:
    """A denoiser as solvers see it: float sigma in, state-dtype tensor out, evaluations counted.

    This is the only cast boundary of a solve (docs/conventions.md): the state is cast to
    ``model_dtype`` before the call and the result back to ``state_dtype``. Sigma is broadcast to a
    ``[B]`` tensor on ``x``'s device with ``torch.full`` (no host synchronisation).

    Attributes:
        nfe: number of denoiser evaluations made through this object.
    """

    __slots__ = ("denoiser", "model_dtype", "state_dtype", "sigma_dtype", "nfe")

    def __init__(self, denoiser: Denoiser, *, model_dtype: torch.dtype, state_dtype: torch.dtype) -> None:
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as D(x, sigma) -> x0; got {type(denoiser).__name__}.")
        self.denoiser = denoiser
        self.model_dtype = model_dtype
        self.state_dtype = state_dtype
        # Half-precision sigmas lose digits that matter (0.0292 vs 0.0293); never go below float32.
        self.sigma_dtype = torch.promote_types(model_dtype, torch.float32)
        self.nfe = 0

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        sigma_batch = torch.full((x.shape[0],), sigma, dtype=self.sigma_dtype, device=x.device)
        out = self.denoiser(x.to(self.model_dtype), sigma_batch)
        check_output(
            out,
            x,
            "the denoiser",
            "a denoiser returns E[x0 | x] with the shape of x (wrap models that predict noise, v or "
            "velocity with gaussport.schedules / gaussport.adapters)",
        )
        self.nfe += 1
        return out.to(self.state_dtype)


def model_device(denoiser: object) -> torch.device:
    """Where a model runs when the caller does not say: the device of its first parameter (an
    ``nn.Module``), else the CPU (a function, or an adapter that holds its model without exposing
    ``parameters``: pass the device explicitly for those)."""
    parameters = getattr(denoiser, "parameters", None)
    if callable(parameters):
        try:
            for p in parameters():
                if isinstance(p, Tensor):
                    return p.device
        except TypeError:  # a ``parameters`` attribute that is not the module's method
            pass
    return torch.device("cpu")


def check_output(out: object, x: Tensor, what: str, hint: str = "it must keep the shape of x") -> None:
    """Check what a model or a flow map returned for ``x``: a real float tensor of its shape and device.

    Shape, dtype and device are metadata: checking them costs no host synchronisation. Values are
    checked once per run, on the result (:func:`gaussport.loop.finish`).

    Raises:
        TypeError: for a non-tensor or a tensor that is not real floating-point.
        ValueError: for another shape or device.
    """
    if not isinstance(out, Tensor):
        raise TypeError(f"{what} returned {type(out).__name__}; it must return a torch.Tensor.")
    if not out.is_floating_point():
        raise TypeError(
            f"{what} returned dtype {out.dtype}; it must return a real floating-point tensor "
            "(float16, bfloat16, float32 or float64)."
        )
    if out.shape != x.shape:
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}; {hint}."
        )
    if out.device != x.device:
        raise ValueError(
            f"{what} returned a tensor on {out.device} for an input on {x.device}; keep the model and "
            "x on the same device (e.g. model.to(x.device))."
        )


class CountingDenoiser:
    """A denoiser that counts its calls, for samplers that do not go through :class:`DenoiserCall`.

    Args:
        denoiser: the denoiser to wrap.
        record_sigmas: also record ``sigma[0]`` of every call in :attr:`sigmas` (one host
            synchronisation per call on a GPU: for tests, not for timing).

    Attributes:
        calls: the number of calls so far.
        sigmas: the recorded noise levels (empty unless ``record_sigmas``).
    """

    def __init__(self, denoiser: Denoiser, *, record_sigmas: bool = False) -> None:
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as D(x, sigma) -> x0; got {type(denoiser).__name__}.")
        self.denoiser = denoiser
        self.record_sigmas = record_sigmas
        self.calls = 0
        self.sigmas: list[float] = []

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        if self.record_sigmas:
            self.sigmas.append(float(sigma[0]))
        return self.denoiser(x, sigma)
