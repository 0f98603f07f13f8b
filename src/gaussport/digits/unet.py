"""A compact EDM-preconditioned, class-conditional U-Net denoiser for 8x8 single-channel images.

This is gaussport's own small network (plain PyTorch, written for this package), trained on
scikit-learn's 8x8 digits by :mod:`gaussport.digits.train` and shipped with the package
(:func:`gaussport.digits.load_digits_denoiser`). It serves as a real trained model for solver
benchmarks and as the test network for the EDM adapter, so it exposes the interface of EDM's
``EDMPrecond``: ``forward(x, sigma, class_labels=None, force_fp32=False)`` returning the denoised
``x0`` estimate, and the attributes ``img_resolution``, ``img_channels``, ``label_dim``,
``sigma_min``, ``sigma_max`` and ``round_sigma``. Called as ``net(x, sigma)`` it is an
unconditional :class:`gaussport.Denoiser`.

Preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Table 1, "ours" column), with ``sigma_data = 0.5``:

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), label)

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in   = 1 / sqrt(sigma_data^2 + sigma^2),
    c_noise = log(sigma) / 4.

``F`` is a two-level U-Net (8x8 and 4x4) of residual blocks modulated by an embedding of the noise
level and the class label, with self-attention at 4x4. The residual branch of every block and the
output layer start at zero, so an untrained network is ``D = c_skip x``: the exact denoiser of
``N(0, sigma_data^2 I)``.

Class conditioning follows EDM's convention: a label is a one-hot row of length ``label_dim``
(integer labels are accepted and converted), and the all-zero row is the *null* label. Training
replaces a fraction of the labels by the null label (label dropout, as in classifier-free guidance,
Ho & Salimans 2022), so ``class_labels=None`` gives an unconditional model from the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DigitsUNet", "edm_preconditioning"]

SIGMA_DATA = 0.5


def edm_preconditioning(
    sigma: Tensor, sigma_data: float = SIGMA_DATA
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of EDM (Karras et al. 2022, Table 1), elementwise in ``sigma``."""
    s2 = sigma * sigma
    d2 = sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + d2)
    c_in = 1.0 / torch.sqrt(d2 + s2)
    c_noise = torch.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when possible, with at least 4 channels per group."""
    return max(1, min(8, channels // 4))


class _ResBlock(nn.Module):
    """Pre-activation residual block; the noise/label embedding sets a per-channel scale and shift.

    ``out = (skip(x) + conv2(dropout(silu(norm2(conv1(silu(norm1(x)))) * (1 + scale) + shift)))) / sqrt(2)``
    (the adaptive group-norm block of Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §3).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), scale + 1))
        h = self.conv2(self.dropout(h))
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) * (1.0 / math.sqrt(2.0))


class _Attention(nn.Module):
    """Multi-head self-attention over the spatial positions, with a residual connection."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads}).")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(out)) * (1.0 / math.sqrt(2.0))


class DigitsUNet(nn.Module):
    """EDM-preconditioned class-conditional U-Net for ``[B, img_channels, 8, 8]`` images in [-1, 1].

    Args:
        img_resolution: image side length (8 for the digits; must be divisible by 2).
        img_channels: number of image channels (1 for the digits).
        label_dim: number of classes (0: unconditional only).
        model_channels: channels at full resolution; the 4x4 level has ``channel_mult`` times as many.
        channel_mult: channel multiplier of the half-resolution level.
        num_blocks: residual blocks per level in the encoder (the decoder has one more).
        emb_dim: width of the noise/label embedding.
        attention_heads: heads of the self-attention at half resolution (0: no attention).
        dropout: dropout probability inside the residual blocks (training only).
        sigma_min: the smallest supported noise level (EDM's attribute; metadata for samplers).
        sigma_max: the largest supported noise level (EDM's attribute; metadata for samplers).
        sigma_data: EDM's data standard deviation (0.5 for data in [-1, 1]).
        generator: source of the initial weights (``torch.Generator().manual_seed(0)`` if ``None``);
            the global RNG is never used. Loading a state dict replaces them.

    Call as ``net(x, sigma)`` (unconditional) or ``net(x, sigma, class_labels)``; see :meth:`forward`.
    """

    def __init__(
        self,
        *,
        img_resolution: int = 8,
        img_channels: int = 1,
        label_dim: int = 10,
        model_channels: int = 32,
        channel_mult: int = 2,
        num_blocks: int = 2,
        emb_dim: int = 128,
        attention_heads: int = 4,
        dropout: float = 0.1,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = SIGMA_DATA,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if img_resolution % 2:
            raise ValueError(f"img_resolution must be even; got {img_resolution}.")
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.label_dim = int(label_dim)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.use_fp16 = False  # EDMPrecond attribute: this network has no half-precision path.
        self.config = {
            "img_resolution": self.img_resolution,
            "img_channels": self.img_channels,
            "label_dim": self.label_dim,
            "model_channels": model_channels,
            "channel_mult": channel_mult,
            "num_blocks": num_blocks,
            "emb_dim": emb_dim,
            "attention_heads": attention_heads,
            "dropout": dropout,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "sigma_data": self.sigma_data,
        }
        c0, c1 = model_channels, model_channels * channel_mult
        self.fourier_dim = model_channels
        with torch.device("meta"):  # allocate without drawing from the global RNG
            self.map_noise = nn.Sequential(
                nn.Linear(self.fourier_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )
            self.map_label = nn.Linear(self.label_dim, emb_dim, bias=False) if self.label_dim else None
            self.conv_in = nn.Conv2d(img_channels, c0, 3, padding=1)
            self.enc0 = nn.ModuleList([_ResBlock(c0, c0, emb_dim, dropout) for _ in range(num_blocks)])
            self.enc1 = nn.ModuleList(
                [_ResBlock(c0 if i == 0 else c1, c1, emb_dim, dropout) for i in range(num_blocks)]
            )
            self.mid = _ResBlock(c1, c1, emb_dim, dropout)
            self.attn = _Attention(c1, attention_heads) if attention_heads else None
            skips1 = [c1] * num_blocks
            skips0 = [c0] * (num_blocks + 1)  # conv_in output and each encoder block at 8x8
            self.dec1 = nn.ModuleList([_ResBlock(c1 + s, c1, emb_dim, dropout) for s in skips1])
            self.dec0 = nn.ModuleList(
                [_ResBlock((c1 if i == 0 else c0) + s, c0, emb_dim, dropout) for i, s in enumerate(skips0)]
            )
            self.norm_out = nn.GroupNorm(_groups(c0), c0)
            self.conv_out = nn.Conv2d(c0, img_channels, 3, padding=1)
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    # ------------------------------------------------------------------ parameters
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every weight from ``generator`` (seed 0 if ``None``).

        Convolutions and linear layers: uniform on ``[-b, b]``, ``b = sqrt(3 / fan_in)`` (unit-variance
        outputs for unit-variance inputs, He et al. 2015), biases 0. The last convolution of every
        residual branch, the attention output projection and the output layer are zero, so each block
        starts as its skip path and ``F = 0`` (then ``D = c_skip x``).
        """
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                w = module.weight
                fan_in = w[0].numel()
                bound = math.sqrt(3.0 / fan_in)
                w.copy_((torch.rand(w.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.GroupNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        zero = [block.conv2 for block in (*self.enc0, *self.enc1, self.mid, *self.dec1, *self.dec0)]
        zero += [self.conv_out] + ([self.attn.proj] if self.attn is not None else [])
        for module in zero:
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (the network computes in it)."""
        return self.conv_in.weight.dtype

    def round_sigma(self, sigma: Tensor | float | Sequence[float]) -> Tensor:
        """EDM's ``round_sigma``: the network accepts any noise level, so this is the identity."""
        return torch.as_tensor(sigma)

    # ------------------------------------------------------------------ conditioning
    def _noise_features(self, c_noise: Tensor) -> Tensor:
        """Sinusoidal features of ``c_noise = log(sigma) / 4`` at log-spaced frequencies 1..64 rad per unit.

        ``c_noise`` spans about [-1.6, 1.1] for sigma in [0.002, 80]; the lowest frequency keeps the
        features monotone over that span and the highest resolves ~2% changes of sigma.
        """
        half = self.fourier_dim // 2
        freqs = torch.exp(
            torch.linspace(0.0, math.log(64.0), half, device=c_noise.device, dtype=c_noise.dtype)
        )
        angles = c_noise[:, None] * freqs
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)

    def one_hot(
        self, class_labels: Tensor | None, batch: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """The ``[batch, label_dim]`` label rows: ``None`` gives null (all-zero) rows; integer labels
        ``[batch]`` become one-hot rows; float rows ``[batch or 1, label_dim]`` pass through (broadcast)."""
        if class_labels is None:
            return torch.zeros(batch, self.label_dim, device=device, dtype=dtype)
        if not isinstance(class_labels, Tensor):
            class_labels = torch.as_tensor(class_labels)
        if not class_labels.is_floating_point():
            labels = class_labels.to(device=device, dtype=torch.long).reshape(-1)
            if labels.numel() == 1:
                labels = labels.expand(batch)
            if labels.shape != (batch,) or bool(((labels < 0) | (labels >= self.label_dim)).any()):
                raise ValueError(
                    f"integer class_labels must have shape [{batch}] with values in [0, {self.label_dim}); "
                    f"got shape {tuple(class_labels.shape)}."
                )
            return F.one_hot(labels, self.label_dim).to(dtype)
        rows = class_labels.to(device=device, dtype=dtype).reshape(-1, self.label_dim)
        if rows.shape[0] not in (1, batch):
            raise ValueError(f"class_labels has {rows.shape[0]} rows for a batch of {batch}.")
        return rows.expand(batch, self.label_dim)

    # ------------------------------------------------------------------ the model
    def raw(self, x_in: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        """The raw network ``F(c_in x, c_noise, label)`` (no preconditioning), in the weights' dtype."""
        emb = self.map_noise(self._noise_features(c_noise))
        if self.map_label is not None and labels is not None:
            emb = emb + self.map_label(labels * math.sqrt(self.label_dim))
        emb = F.silu(emb)
        h = self.conv_in(x_in)
        skips = [h]
        for block in self.enc0:
            h = block(h, emb)
            skips.append(h)
        h = F.avg_pool2d(h, 2)
        for block in self.enc1:
            h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        for block in self.dec1:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        for block in self.dec0:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_labels: Tensor | None = None,
        force_fp32: bool = False,
    ) -> Tensor:
        """The denoised estimate ``D(x, sigma) ~ E[x0 | x]`` (EDM preconditioning).

        Args:
            x: noisy images ``[B, img_channels, img_resolution, img_resolution]`` (VE: ``x0 + sigma eps``).
            sigma: noise levels, a scalar or any tensor with ``B`` elements (e.g. ``[B]`` or EDM's
                ``[B, 1, 1, 1]``); must be > 0.
            class_labels: ``None`` (unconditional), integer labels ``[B]``, or one-hot rows
                ``[B, label_dim]`` (EDM's convention; all-zero rows are unconditional).
            force_fp32: accepted for ``EDMPrecond`` compatibility; the network has no half-precision
                path, so it always computes in the dtype of its weights.

        Returns:
            ``D(x, sigma)`` with the shape of ``x``, in ``x``'s dtype promoted to at least float32;
            the skip term ``c_skip x`` is formed in that dtype, the network output in the weights' dtype.
        """
        del force_fp32
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, expected))}]; got {tuple(x.shape)}.")
        batch = x.shape[0]
        work = torch.promote_types(x.dtype, torch.float32)
        s = torch.as_tensor(sigma, device=x.device).to(work).reshape(-1)
        if s.numel() == 1:
            s = s.expand(batch)
        if s.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have {batch} elements; got shape {tuple(s.shape)}.")
        coefficients = edm_preconditioning(s, self.sigma_data)
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1) for c in coefficients)
        xw = x.to(work)
        net_dtype = self.dtype
        labels = None if self.label_dim == 0 else self.one_hot(class_labels, batch, x.device, net_dtype)
        out = self.raw((c_in * xw).to(net_dtype), c_noise.reshape(-1).to(net_dtype), labels)
        return c_skip * xw + c_out * out.to(work)
