"""The training set as a mixture of point masses: the exact "memorising" denoiser.

For ``p0 = (1/N) sum_i delta(x - x_i)`` the noisy marginal is ``(1/N) sum_i N(x_i, sigma^2 I)`` and the
posterior mean is

    ``D(x, sigma) = sum_i w_i x_i``,  ``w = softmax_i(-|x - x_i|^2 / (2 sigma^2))``.

It is the denoiser a network converges to if it memorises its training set exactly; as
``sigma -> 0`` the weights concentrate on the nearest training point, so the PF-ODE of this
mixture ends on a training image. The maths and the numerics (chunked log-sum-exp, float64):
docs/mixture-teleport.md#the-empirical-mixture.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import as_int
from .covariance import factor_dtype
from .gaussian import Gaussian

__all__ = ["EmpiricalMixture"]


class EmpiricalMixture:
    """The uniform mixture of point masses at the rows of ``data``; an exact denoiser.

    Order: one call costs ``O(B N d)`` flops (one matmul per chunk) and ``O(B (chunk_size + d))``
    memory beyond the stored data: the softmax over the ``N`` points is merged chunk by chunk with
    an online log-sum-exp, so ``N`` may be far larger than what a ``[B, N]`` matrix allows. All
    arithmetic is float64 (float32 on MPS, which has no float64).

    Args:
        data: ``[N, *sample_shape]`` samples (a tensor or NumPy array), ``N >= 1``; copied.
        chunk_size: training points per chunk of the log-sum-exp.
        device: where the points are kept and the denoiser runs (default CPU; a call on another
            device copies them there once).

    Raises:
        TypeError: data that is not a real tensor or array; a non-integer ``chunk_size``.
        ValueError: empty data, data without a sample dimension, NaN or infinite values, or
            ``chunk_size < 1``.
    """

    def __init__(
        self,
        data: Tensor | np.ndarray,
        *,
        chunk_size: int = 4096,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if not isinstance(data, Tensor):
            raise TypeError(
                "EmpiricalMixture takes the training samples as a tensor [N, ...]; "
                f"got {type(data).__name__}."
            )
        if data.dtype == torch.bool or data.is_complex() or data.is_meta or data.layout != torch.strided:
            raise TypeError(f"EmpiricalMixture needs a dense real tensor; got dtype {data.dtype}.")
        if data.ndim < 2:
            raise ValueError(
                f"EmpiricalMixture needs data of shape [N, *sample_shape]; got shape {tuple(data.shape)} "
                "(add a sample dimension, e.g. data[:, None], for scalars)."
            )
        if data.shape[0] == 0 or math.prod(data.shape[1:]) == 0:
            raise ValueError(
                f"EmpiricalMixture needs at least one non-empty sample; got shape {tuple(data.shape)}."
            )
        self.chunk_size = as_int(chunk_size, "chunk_size", minimum=1)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = factor_dtype(self._device)
        points = data.detach().reshape(data.shape[0], -1).to(self._device, dtype, copy=True)
        if not bool(torch.isfinite(points).all()):
            raise ValueError("the EmpiricalMixture data contain NaN or infinite values; drop those rows.")
        self._shape = tuple(int(s) for s in data.shape[1:])
        self._copies: dict[torch.device, tuple[Tensor, Tensor]] = {
            self._device: (points, (points * points).sum(-1))
        }

    # ----------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, ...]:
        """The sample shape."""
        return self._shape

    @property
    def dim(self) -> int:
        return math.prod(self._shape)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def points(self) -> Tensor:
        """The training points ``[N, *shape]`` (float64; a view of the stored copy: do not modify)."""
        return self._copies[self._device][0].reshape(len(self), *self._shape)

    def __len__(self) -> int:
        return int(self._copies[self._device][0].shape[0])

    def __repr__(self) -> str:
        return (
            f"EmpiricalMixture(points={len(self)}, shape={self._shape}, chunk_size={self.chunk_size}, "
            f"device={self._device})"
        )

    def to(self, device: torch.device | str) -> EmpiricalMixture:
        """The same mixture with its points on ``device`` (``self`` if already there)."""
        device = torch.device(device)
        if device == self._device:
            return self
        return EmpiricalMixture(self.points, chunk_size=self.chunk_size, device=device)

    def moments(self) -> Gaussian:
        """The Gaussian with the data's mean and covariance (``1/N`` normalisation: the mixture's own)."""
        pts = self._copies[self._device][0].to("cpu", torch.float64)
        mu = pts.mean(0)
        diff = pts - mu
        cov = diff.T @ diff / pts.shape[0]
        return Gaussian(mu.reshape(self._shape), (cov + cov.T) / 2, source="EmpiricalMixture.moments")

    # ----------------------------------------------------------------- numerics
    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._copies:
            pts = self._copies[self._device][0].to(device, factor_dtype(device))
            self._copies[device] = (pts, (pts * pts).sum(-1))
        return self._copies[device]

    def _flat(self, x: Tensor, what: str = "x") -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{what} must be a floating-point tensor [B, *{self._shape}].")
        if tuple(x.shape[1:]) != self._shape:
            raise ValueError(
                f"{what} has shape {tuple(x.shape)}; this EmpiricalMixture has samples of shape "
                f"{self._shape} "
                f"(expected [B, *{self._shape}])."
            )
        return x.reshape(x.shape[0], self.dim).to(factor_dtype(x.device))

    def _sigmas(self, sigma: Tensor | float, batch: int, like: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
        if s.ndim == 0:
            s = s.expand(batch)
        if s.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have shape [{batch}]; got {tuple(s.shape)}.")
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0; got {s.tolist()}.")
        return s

    def _squared_distances(self, v: Tensor, pts: Tensor, norms: Tensor, start: int, stop: int) -> Tensor:
        """``|v_b - x_i|^2`` for the points ``start:stop``, ``[B, stop - start]``, clamped at 0."""
        d2 = (v * v).sum(-1, keepdim=True) - 2.0 * v @ pts[start:stop].T + norms[start:stop]
        return d2.clamp_min(0.0)  # the matmul form can round a zero distance to a tiny negative

    def _posterior(self, v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """``(D, log sum_i exp(-|v - x_i|^2 / (2 s^2)))`` by an online log-sum-exp over the chunks.

        Rows with ``s = 0`` are not handled here (their weights are a hard argmin).
        """
        pts, norms = self._on(v.device)
        scale = 0.5 / (s * s)  # [B]
        run_max = torch.full_like(s, -math.inf)
        run_sum = torch.zeros_like(s)
        acc = torch.zeros_like(v)
        for start in range(0, pts.shape[0], self.chunk_size):
            stop = min(start + self.chunk_size, pts.shape[0])
            logits = -self._squared_distances(v, pts, norms, start, stop) * scale[:, None]
            new_max = torch.maximum(run_max, logits.max(-1).values)
            rescale = torch.exp(run_max - new_max)  # exp(-inf) = 0 on the first chunk
            weights = torch.exp(logits - new_max[:, None])
            run_sum = run_sum * rescale + weights.sum(-1)
            acc = acc * rescale[:, None] + weights @ pts[start:stop]
            run_max = new_max
        return acc / run_sum[:, None], run_max + torch.log(run_sum)

    def nearest(self, x: Tensor) -> Tensor:
        """The training point nearest to each sample of ``x`` (the ``sigma -> 0`` limit of the denoiser)."""
        v = self._flat(x)
        pts, norms = self._on(v.device)
        best = torch.full((v.shape[0],), math.inf, dtype=v.dtype, device=v.device)
        index = torch.zeros(v.shape[0], dtype=torch.long, device=v.device)
        for start in range(0, pts.shape[0], self.chunk_size):
            stop = min(start + self.chunk_size, pts.shape[0])
            d2, i = self._squared_distances(v, pts, norms, start, stop).min(-1)
            closer = d2 < best
            best = torch.where(closer, d2, best)
            index = torch.where(closer, i + start, index)
        return pts[index].reshape(x.shape).to(x.dtype)

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """The exact posterior mean ``sum_i softmax_i(-|x - x_i|^2 / (2 sigma^2)) x_i``.

        ``sigma`` is a scalar or ``[B]``; ``sigma = 0`` gives the nearest training point, and so does
        a level so small that the weights are one-hot in float64 (``1 / sigma^2`` or every logit
        overflows).
        """
        v = self._flat(x)
        s = self._sigmas(sigma, v.shape[0], v)
        hard = ~torch.isfinite(0.5 / (s * s))  # sigma = 0, or sigma^2 underflows
        if bool(hard.all()):
            return self.nearest(x)
        out, lse = self._posterior(v, torch.where(hard, torch.ones_like(s), s))
        hard = hard | ~torch.isfinite(lse)  # every distance / sigma^2 overflowed: one-hot on the nearest
        if bool(hard.any()):
            out = torch.where(hard[:, None], self.nearest(x).reshape(out.shape).to(out.dtype), out)
        return out.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma^2`` (Tweedie); needs ``sigma > 0``."""
        v = self._flat(x)
        s = self._sigmas(sigma, v.shape[0], v)
        if bool((s == 0).any()):
            raise ValueError("the score of a point-mass mixture is undefined at sigma = 0; pass sigma > 0.")
        d, _ = self._posterior(v, s)
        out = (d - v) / (s * s)[:, None]
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(
                f"the score overflows float64 at sigma = {float(s.min()):.3g}; evaluate it at a larger sigma."
            )
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log p_sigma(x) = logsumexp_i(-|x - x_i|^2 / (2 sigma^2)) - log N - (d/2) log(2 pi sigma^2)``.

        Per sample, shape ``[B]``, float64; needs ``sigma > 0`` (point masses have no density).
        """
        v = self._flat(x)
        s = self._sigmas(sigma, v.shape[0], v)
        if bool((s == 0).any()):
            raise ValueError("a point-mass mixture has no density at sigma = 0; pass sigma > 0.")
        _, lse = self._posterior(v, s)
        out = lse - math.log(len(self)) - 0.5 * self.dim * torch.log(2 * math.pi * s * s)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError(
                f"log p overflows float64 at sigma = {float(s.min()):.3g} (the density is below "
                "exp(-1e308)); evaluate it at a larger sigma."
            )
        return out
