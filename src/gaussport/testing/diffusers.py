"""Tiny diffusers models built offline, and Gaussian-exact replacements for their ``forward``.

For testing schedulers and pipelines without a model hub: the builders use the tiny configurations
of diffusers' own unit tests (a few thousand parameters, CPU-fast) and initialise randomly with a
fixed seed, so nothing is downloaded
(docs/testing.md#schedulers-and-pipelines-gaussporttestingdiffusers).
A *Gaussian-exact* forward (:class:`ExactForward`, :func:`vp_exact`, :func:`flow_exact`) returns
the exact epsilon / v / x0 / velocity prediction for Gaussian data (through
:class:`gaussport.schedules.NativeModel` and the closed-form Gaussian denoiser), so a sampler's
error can be measured against :meth:`gaussport.analytic.Gaussian.flow` while the pipeline, the
scheduler and every wrapper around the model stay the real ones. Example::

    from gaussport.testing import gaussian_of_shape
    from gaussport.testing.diffusers import tiny_unet, vp_exact

    unet = tiny_unet()                                   # 3x8x8, 11,767 parameters, seed 0
    unet.forward = vp_exact(gaussian_of_shape((3, 8, 8)), scheduler.alphas_cumprod)

Full pipelines with text encoders and tokenizers (:func:`tiny_sd_pipeline`, :func:`tiny_sd3_pipeline`)
are built offline too: the CLIP tokenizer's vocabulary is the 26 letters (every other word is the
unknown token), so prompts run through the real ``encode_prompt``. Importing this module does not
import diffusers; each builder does (``pip install gaussport[test]``).
"""

from __future__ import annotations

import json
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import schedules
from ..analytic import Gaussian

__all__ = [
    "ExactForward",
    "ModelOutput",
    "vp_exact",
    "flow_exact",
    "tiny_unet",
    "tiny_cond_unet",
    "tiny_vae",
    "tiny_sd3_transformer",
    "text_free_sd_pipeline",
    "text_free_sd3_pipeline",
    "tiny_clip_tokenizer",
    "tiny_clip_text_encoder",
    "tiny_sd_pipeline",
    "tiny_sd3_pipeline",
    "tiny_kandinsky_unet",
    "tiny_movq",
]


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "gaussport.testing.diffusers builds diffusers models; install diffusers "
            "(pip install 'gaussport[test]')."
        ) from exc
    return diffusers


class ModelOutput:
    """A diffusers-style model output (``.sample``)."""

    def __init__(self, sample: Tensor) -> None:
        self.sample = sample


class ExactForward:
    """A replacement ``forward`` returning a Gaussian-exact prediction; counts calls and batch sizes.

    Args:
        native: the exact model in the scheduler's native time, ``native(x_t, t)`` (a
            :class:`~gaussport.schedules.NativeModel`).
        at_pure_noise: the prediction where ``t / time_scale >= 1`` (pure noise, where ``native``
            is singular, e.g. a flow model at t = 1); ``None`` if never needed.
        time_scale: the model's timestep of pure noise (1000 for SD3-style transformers).
        learned_variance: append as many zero channels as the prediction has (a learned-variance
            model's output, as Kandinsky's and DeepFloyd's UNets return; pipelines keep the first half).

    Attributes:
        calls, batches, timesteps: one entry per call (for NFE and batching checks).

    The call signature accepts what diffusers pipelines pass to UNets (``sample, timestep, ...``)
    and transformers (``hidden_states=..., timestep=...``); the output is float32, like the models.
    """

    def __init__(
        self,
        native: Callable[[Tensor, Tensor], Tensor],
        *,
        at_pure_noise: Callable[[Tensor], Tensor] | None = None,
        time_scale: float = 1.0,
        learned_variance: bool = False,
    ) -> None:
        self.native = native
        self.at_pure_noise = at_pure_noise
        self.time_scale = time_scale
        self.learned_variance = learned_variance
        self.calls = 0
        self.batches: list[int] = []
        self.timesteps: list[float] = []

    def __call__(
        self,
        sample: Tensor | None = None,
        timestep: Any = None,
        *args: Any,
        hidden_states: Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        x = (sample if sample is not None else hidden_states).to(torch.float64)
        self.calls += 1
        self.batches.append(x.shape[0])
        t = torch.as_tensor(timestep, dtype=torch.float64, device=x.device).expand(x.shape[0])
        self.timesteps.append(float(t[0]))
        out = torch.empty_like(x)
        noise = (
            t / self.time_scale >= 1.0
            if self.at_pure_noise is not None
            else torch.zeros_like(t, dtype=torch.bool)
        )
        if bool(noise.any()):
            out[noise] = self.at_pure_noise(x[noise])
        if bool((~noise).any()):
            out[~noise] = self.native(x[~noise], t[~noise])
        out = out.to(torch.float32)
        if self.learned_variance:
            out = torch.cat([out, torch.zeros_like(out)], 1)
        return ModelOutput(out) if return_dict else (out,)


def vp_exact(
    gaussian: Gaussian, alphas_cumprod: Tensor, prediction: str = "epsilon", *, learned_variance: bool = False
) -> ExactForward:
    """An exact epsilon/v/x0 model for a discrete VP schedule (timestep = fractional training index)."""
    native = schedules.NativeModel(gaussian, schedules.VPDiscrete(alphas_cumprod), prediction)
    return ExactForward(native, learned_variance=learned_variance)


def flow_exact(gaussian: Gaussian, time_scale: float = 1000.0) -> ExactForward:
    """An exact velocity model for rectified flow (timestep = t * time_scale); at t = 1, v = x - mu."""
    native = schedules.NativeModel(gaussian, schedules.RectifiedFlow(), "flow", time_scale=time_scale)
    mean = gaussian.mean

    def at_noise(x: Tensor) -> Tensor:  # E[eps - x0 | x_1 = eps] = x - mu
        return x - mean.to(x)

    return ExactForward(native, at_pure_noise=at_noise, time_scale=time_scale)


def tiny_unet(*, channels: int = 3, size: int = 8, seed: int = 0) -> Any:
    """diffusers' DDPM test ``UNet2DModel`` (11,767 parameters at 3x8x8), ``channels x size x size``,
    in eval mode."""
    diffusers = _diffusers()
    torch.manual_seed(seed)  # diffusers initialises from the global RNG
    return diffusers.UNet2DModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


def tiny_cond_unet(seed: int = 0) -> Any:
    """diffusers' Stable Diffusion test ``UNet2DConditionModel``: 4x8x8 latents, cross-attention dim 8."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    ).eval()


def tiny_vae(seed: int = 0, *, shift_factor: float | None = None) -> Any:
    """A two-block ``AutoencoderKL``: 3-channel images, 4-channel latents (a scale factor of 2), in eval
    mode; ``shift_factor`` as SD3/Flux VAEs have one."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
        shift_factor=shift_factor,
    ).eval()


def tiny_sd3_transformer(seed: int = 0) -> Any:
    """A one-layer ``SD3Transformer2DModel``: 4x8x8 latents, patch 1, joint attention dim 32."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()


def text_free_sd_pipeline(unet: Any, vae: Any, scheduler: Any) -> Any:
    """An unmodified ``StableDiffusionPipeline`` without text encoder, tokenizer or safety checker
    (call it with ``prompt_embeds=``); progress bar off."""
    pipe = _diffusers().StableDiffusionPipeline(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        text_encoder=None,
        tokenizer=None,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_free_sd3_pipeline(transformer: Any, vae: Any, scheduler: Any) -> Any:
    """An unmodified ``StableDiffusion3Pipeline`` without its three text encoders and tokenizers
    (call it with ``prompt_embeds=`` and ``pooled_prompt_embeds=``); progress bar off."""
    pipe = _diffusers().StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "the tiny text encoders need transformers (pip install 'gaussport[test]')."
        ) from exc
    return transformers


def tiny_clip_tokenizer() -> Any:
    """A ``CLIPTokenizer`` whose vocabulary is the 26 letters (as words and word ends) and the two
    special tokens; 77 tokens per prompt, as CLIP's. Built from files written to a temporary folder."""
    transformers = _transformers()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab))
        Path(folder, "merges.txt").write_text("#version: 0.2\n")
        Path(folder, "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
        return transformers.CLIPTokenizer.from_pretrained(folder)


def tiny_clip_text_encoder(hidden_size: int = 8, projection_dim: int | None = None, seed: int = 0) -> Any:
    """A one-layer CLIP text model for :func:`tiny_clip_tokenizer`'s vocabulary (54 tokens):
    ``CLIPTextModel``, or ``CLIPTextModelWithProjection`` with ``projection_dim``; in eval mode."""
    transformers = _transformers()
    config = transformers.CLIPTextConfig(
        vocab_size=54,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim or hidden_size,
    )
    torch.manual_seed(seed)
    cls = transformers.CLIPTextModel if projection_dim is None else transformers.CLIPTextModelWithProjection
    return cls(config).eval()


def tiny_sd_pipeline(scheduler: Any = None) -> Any:
    """A complete ``StableDiffusionPipeline`` (tiny UNet, VAE, CLIP text encoder and tokenizer; no
    safety checker), 16x16 images, 4x8x8 latents; it saves and loads back as it is. Default
    scheduler: ``EulerDiscreteScheduler`` with Stable Diffusion's betas. Progress bar off."""
    diffusers = _diffusers()
    if scheduler is None:
        scheduler = diffusers.EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
        )
    pipe = diffusers.StableDiffusionPipeline(
        vae=tiny_vae(),
        unet=tiny_cond_unet(),
        scheduler=scheduler,
        text_encoder=tiny_clip_text_encoder(8),
        tokenizer=tiny_clip_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3_pipeline(scheduler: Any = None) -> Any:
    """A ``StableDiffusion3Pipeline`` with two tiny CLIP text encoders (with projection) and their
    tokenizers, without T5 (``text_encoder_3=None``, as SD3 runs without it); 16x16 images, 4x8x8
    latents. Load a saved one back with ``text_encoder_3=None, tokenizer_3=None``. Default scheduler:
    ``FlowMatchEulerDiscreteScheduler(shift=3.0)``. Progress bar off."""
    diffusers = _diffusers()
    if scheduler is None:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(),
        scheduler=scheduler,
        vae=tiny_vae(shift_factor=0.0),
        text_encoder=tiny_clip_text_encoder(16, projection_dim=32, seed=1),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=tiny_clip_text_encoder(16, projection_dim=32, seed=2),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_kandinsky_unet(seed: int = 0) -> Any:
    """diffusers' Kandinsky 2.2 test ``UNet2DConditionModel``: 4 latent channels in, 8 out (learned
    variance), conditioned on 32-dimensional image embeddings (``added_cond_kwargs["image_embeds"]``)."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        in_channels=4,
        out_channels=8,
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(8, 16),
        layers_per_block=1,
        encoder_hid_dim=32,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    ).eval()


def tiny_movq(seed: int = 0) -> Any:
    """diffusers' Kandinsky test ``VQModel`` (MoVQ): 3-channel images, 4-channel latents, scale factor 2."""
    diffusers = _diffusers()
    torch.manual_seed(seed)
    return diffusers.VQModel(
        block_out_channels=[32, 64],  # SpatialNorm's fixed 32 groups
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    ).eval()
