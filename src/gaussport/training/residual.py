"""The Gaussian-residual denoiser: EDM's preconditioning with the data's Gaussian as the skip.

EDM (Karras et al. 2022, Table 1) writes a denoiser as ``D = c_skip x + c_out F(c_in x, c_noise)``;
``c_skip x`` is the exact denoiser of ``N(0, sigma_data^2 I)``. Here the skip is the exact denoiser
of the data's fitted Gaussian ``N(mu, Sigma)`` (any covariance representation):

    D(x, sigma) = D_G(x, sigma) + c_out(sigma) F(c_in(sigma) (x - mu), c_noise(sigma), **kwargs)

with ``D_G(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``,
``c_out(sigma)^2 = (1/d) tr[Sigma sigma^2 (Sigma + sigma^2 I)^-1]`` (the Gaussian's mean posterior
variance, so that F's regression target has unit variance under the Gaussian),
``c_in(sigma) = 1 / sqrt(sigma_data^2 + sigma^2)`` with ``sigma_data^2 = tr(Sigma) / d`` unless given,
and ``c_noise(sigma) = log(sigma) / 4``. Derivations: docs/training.md#the-gaussian-residual-denoiser.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..analytic import Gaussian
from ..analytic.covariance import LowRankPlusIsotropic, factor_dtype

__all__ = ["GaussianResidualDenoiser"]


def _spectrum_with_counts(gaussian: Gaussian) -> tuple[Tensor, Tensor]:
    """The distinct eigenvalue slots of the covariance and how many directions each covers (float64, CPU).

    ``O(d)`` memory for dense and diagonal covariances, ``O(r)`` for low rank (the residual variance
    counts ``d - r`` times): ``c_out`` needs only ``sum_k f(lam_k)``, never a ``d x d`` matrix.
    """
    cov = gaussian.cov
    if isinstance(cov, LowRankPlusIsotropic):
        values = cov.spectral_values
        counts = torch.ones_like(values)
        counts[-1] = float(cov.dim - cov.rank)
        return values.clone(), counts
    values = cov.spectrum().clone()
    return values, torch.ones_like(values)


class GaussianResidualDenoiser(nn.Module):
    """``D = D_G + c_out F(c_in (x - mu), c_noise)``: a network that learns what the Gaussian misses.

    A gaussport denoiser (``D(x, sigma) -> x0``, VE, ``sigma`` of shape ``[B]``), so the teleport
    (:func:`gaussport.sample` with ``warm_start=gaussian``), the automatic skip level, the solvers
    and the adapters work on it unchanged. With F's output identically zero (a zero-initialised last
    layer) it *is* the Gaussian denoiser ``gaussian(x, sigma)``, to round-off.

    Order and cost: one network evaluation plus one application of ``f(Sigma)`` to ``x - mu``
    (``O(B d^2)`` dense, ``O(B d)`` diagonal, ``O(B d r)`` low rank; no ``d x d`` work for low rank)
    and ``O(B K)`` for the coefficients, ``K`` the number of distinct eigenvalues.

    The Gaussian is *not* part of the module's state: :meth:`state_dict` holds exactly the network's
    entries (prefixed ``network.``). Save the statistics beside the weights with ``Gaussian.save``
    and rebuild the module from both. The Gaussian stays in float64 on the CPU and caches copies per
    device itself, so ``.to(device)`` of this module needs nothing further, and ``.half()`` cannot
    degrade it. ``D_G`` and the coefficients are computed outside autocast, in the state's dtype but
    at least float32 (factors in float64 where the device has it); the sum is returned in ``x``'s dtype.

    Args:
        network: EDM's ``F_theta``: an ``nn.Module`` called as ``network(x_in, c_noise, **kwargs)``
            with ``x_in`` of ``x``'s shape and ``c_noise`` of shape ``[B]``, returning ``x``'s shape.
        gaussian: the data's :class:`gaussport.analytic.Gaussian` (dense, diagonal or low-rank),
            in the units the network is trained in.
        sigma_data: the data standard deviation used by ``c_in`` only; ``None`` (default):
            ``sqrt(tr(Sigma) / d)``, the root mean variance of the Gaussian.

    Raises:
        TypeError: ``network`` is not an ``nn.Module``, ``gaussian`` not a gaussport Gaussian, or
            ``sigma_data`` not a real number.
        ValueError: ``sigma_data`` not finite and positive, or a Gaussian of zero total variance.
    """

    def __init__(self, network: nn.Module, gaussian: Gaussian, *, sigma_data: float | None = None) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"network must be a torch.nn.Module called as network(x_in, c_noise, **kwargs); got "
                f"{type(network).__name__}. Wrap a plain function in an nn.Module."
            )
        if not isinstance(gaussian, Gaussian):
            raise TypeError(
                f"gaussian must be a gaussport.analytic.Gaussian (fit one with Gaussian.fit(data) or load "
                f"one with Gaussian.load(path)); got {type(gaussian).__name__}."
            )
        values, counts = _spectrum_with_counts(gaussian)
        total_variance = float((values * counts).sum())
        if not total_variance > 0.0:
            raise ValueError(
                "the Gaussian has zero total variance (every eigenvalue is 0): its denoiser is the "
                "constant mean and c_out would be 0 at every level. Fit it to data that vary."
            )
        if sigma_data is None:
            sigma_data = math.sqrt(total_variance / gaussian.dim)
        elif isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)):
            raise TypeError(f"sigma_data must be a positive number or None; got {type(sigma_data).__name__}.")
        sigma_data = float(sigma_data)
        if not (math.isfinite(sigma_data) and sigma_data > 0.0):
            raise ValueError(f"sigma_data must be finite and > 0; got {sigma_data}.")
        self.network = network
        self.gaussian = gaussian
        self.sigma_data = sigma_data
        # Plain attributes, not buffers: they are derived from the Gaussian, stay float64 and are not saved.
        self._values = values
        self._weights = counts / gaussian.dim
        self._copies: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def _cached(self, name: str, value: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (name, device, dtype)
        if key not in self._copies:
            self._copies[key] = value.to(device=device, dtype=dtype)
        return self._copies[key]

    def _sigma(self, sigma: Tensor | float, batch: int | None = None) -> Tensor:
        if not isinstance(sigma, Tensor):
            sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if sigma.is_complex() or not (sigma.is_floating_point() or sigma.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"sigma must be a real tensor of noise levels; got dtype {sigma.dtype}.")
        if sigma.ndim == 0 and batch is not None:
            sigma = sigma.expand(batch)
        if sigma.ndim != 1 or (batch is not None and sigma.shape[0] != batch):
            want = f"[{batch}]" if batch is not None else "[B]"
            raise ValueError(
                f"sigma must have shape {want} (one level per sample); got {tuple(sigma.shape)}."
            )
        return sigma

    def _out_dtype(self, sigma: Tensor) -> torch.dtype:
        return torch.promote_types(sigma.dtype, torch.float32)

    # ------------------------------------------------------------------ coefficients
    def c_out_squared(self, sigma: Tensor) -> Tensor:
        """``(1/d) sum_k lam_k sigma^2 / (lam_k + sigma^2)``, shape ``[B]`` (the mean posterior variance)."""
        sigma = self._sigma(sigma)
        work = factor_dtype(sigma.device)
        lam = self._cached("values", self._values, sigma.device, work)
        weights = self._cached("weights", self._weights, sigma.device, work)
        s2 = sigma.to(work).square().unsqueeze(-1)
        # lam s2 / (lam + s2) is 0/0 only for lam = s2 = 0, where the posterior variance is 0.
        posterior = torch.nan_to_num(lam * s2 / (lam + s2), nan=0.0)
        return (posterior * weights).sum(-1)

    def c_out(self, sigma: Tensor) -> Tensor:
        """``sqrt(c_out_squared(sigma))``, shape ``[B]``.

        With ``Sigma = sigma_data^2 I`` it is EDM's ``sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``.
        """
        sigma = self._sigma(sigma)
        return self.c_out_squared(sigma).sqrt().to(self._out_dtype(sigma))

    def c_in(self, sigma: Tensor) -> Tensor:
        """``1 / sqrt(sigma_data^2 + sigma^2)``: unit mean variance of ``x - mu`` under the noisy Gaussian."""
        sigma = self._sigma(sigma)
        work = factor_dtype(sigma.device)
        s = sigma.to(work)
        return torch.rsqrt(self.sigma_data**2 + s * s).to(self._out_dtype(sigma))

    def c_noise(self, sigma: Tensor) -> Tensor:
        """``log(sigma) / 4`` (EDM); ``sigma = 0`` is clamped to the dtype's smallest normal number."""
        sigma = self._sigma(sigma)
        dtype = self._out_dtype(sigma)
        s = sigma.to(dtype)
        return torch.log(s.clamp_min(torch.finfo(dtype).tiny)) / 4.0

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """``1 / c_out(sigma)^2``: F's error at unit scale (EDM's ``lambda`` for isotropic data)."""
        sigma = self._sigma(sigma)
        return (1.0 / self.c_out_squared(sigma)).to(self._out_dtype(sigma))

    # ------------------------------------------------------------------ the model
    def gaussian_denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``D_G(x, sigma)`` outside autocast, in ``x``'s dtype promoted to at least float32."""
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.gaussian(x.to(work), sigma)

    def forward(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        """``D(x, sigma) = D_G(x, sigma) + c_out(sigma) F(c_in(sigma) (x - mu), c_noise(sigma), **kwargs)``.

        Args:
            x: the noisy state ``[B, *gaussian.shape]`` (VE).
            sigma: noise levels, shape ``[B]`` (a 0-d tensor or a float is broadcast).
            **kwargs: conditioning (e.g. class labels), passed to the network unchanged.

        Returns:
            The denoised estimate in ``x``'s dtype.
        """
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = getattr(x, "dtype", type(x).__name__)
            raise TypeError(f"x must be a floating-point tensor; got {got}.")
        if tuple(x.shape[1:]) != self.gaussian.shape:
            raise ValueError(
                f"x has sample shape {tuple(x.shape[1:])} but the Gaussian's is {self.gaussian.shape}; "
                f"pass x of shape [B, {', '.join(map(str, self.gaussian.shape))}]."
            )
        sigma = self._sigma(sigma, x.shape[0]).to(x.device)
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_work = x.to(work)
            base = self.gaussian(x_work, sigma)
            mean = self._cached("mean", self.gaussian.mean, x.device, work)
            view = (-1,) + (1,) * (x.ndim - 1)
            x_in = (self.c_in(sigma).to(work).reshape(view) * (x_work - mean)).to(x.dtype)
            c_out = self.c_out(sigma).to(work).reshape(view)
            c_noise = self.c_noise(sigma)
        residual = self.network(x_in, c_noise, **kwargs)
        if not isinstance(residual, Tensor) or residual.shape != x.shape:
            raise ValueError(
                f"the network returned {getattr(residual, 'shape', type(residual).__name__)}; "
                f"F(x_in, c_noise) must return a tensor of x's shape {tuple(x.shape)}."
            )
        return (base + c_out * residual.to(work)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"gaussian={self.gaussian!r}, sigma_data={self.sigma_data:.4g}"
