"""GaussportScheduler in real diffusers pipelines (tiny models built offline), swapped in with no option.

The three kinds of pipeline loops (docs/adapters.md#which-pipelines-and-workflows-are-covered):
those that call ``scale_model_input`` before every model call (StableDiffusionPipeline), those that
never call it and start from unscaled noise (DDPMPipeline, DDIMPipeline) and those that never call it
but scale their noise by ``init_noise_sigma`` (Kandinsky 2.2, BlipDiffusion, UnCLIP, Wuerstchen).
In each, the plain swap gives ``gaussport.sample`` on the same grid from the start the pipeline's
noise stands for. Then img2img without ``set_begin_index``, and pipelines saved and loaded back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters.diffusers import DiffusersDenoiser
from gaussport.analytic import Gaussian
from gaussport.testing import gaussian_of_shape
from gaussport.testing.diffusers import (
    ExactForward,
    flow_exact,
    text_free_sd_pipeline,
    tiny_cond_unet,
    tiny_kandinsky_unet,
    tiny_movq,
    tiny_sd3_pipeline,
    tiny_sd3_transformer,
    tiny_sd_pipeline,
    tiny_unet,
    tiny_vae,
    vp_exact,
)

diffusers = pytest.importorskip("diffusers")
from gaussport.adapters.diffusers import GaussportScheduler  # noqa: E402  (needs diffusers)

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
KANDINSKY = {"beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012}
STEPS = 8


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


class _Kind:
    """One pipeline, run from the noise ``z``; ``scaled``: it scales its noise by ``init_noise_sigma``;
    ``calls_scale_model_input``: it calls ``scale_model_input`` before every model call."""

    def __init__(
        self, pipe: Any, run: Any, model: Any, kwargs: dict[str, Any], g: Gaussian, skip: float, **flags: bool
    ) -> None:
        self.pipe, self.run, self.model, self.kwargs, self.g, self.skip = pipe, run, model, kwargs, g, skip
        self.scaled, self.calls_scale_model_input = flags["scaled"], flags["calls_scale_model_input"]


def _sd() -> _Kind:
    """StableDiffusionPipeline: scale_model_input before every call, noise scaled by init_noise_sigma."""
    pipe = text_free_sd_pipeline(
        tiny_cond_unet(), tiny_vae(), diffusers.EulerDiscreteScheduler(**SD, steps_offset=1)
    )
    pe = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(5))

    def run(z: Tensor) -> Tensor:
        out = pipe(
            prompt_embeds=pe,
            latents=z.clone(),
            num_inference_steps=STEPS,
            guidance_scale=1.0,
            output_type="latent",
        )
        return out.images

    g = gaussian_of_shape((4, 8, 8), seed=0)
    return _Kind(
        pipe, run, pipe.unet, {"encoder_hidden_states": pe}, g, 2.0, scaled=True, calls_scale_model_input=True
    )


def _ddpm() -> _Kind:
    """DDPMPipeline: no scale_model_input, unscaled noise (the model is Gaussian-exact: no final clamp)."""
    unet = tiny_unet(channels=1, size=4)
    g = gaussian_of_shape((1, 4, 4), seed=2, high=0.05, low=1e-3, mean_scale=0.1)
    base = diffusers.DDPMScheduler(**SD)
    unet.forward = vp_exact(g, base.alphas_cumprod)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=base)
    pipe.set_progress_bar_config(disable=True)

    def run(z: Tensor) -> Tensor:  # DDPMPipeline draws its noise itself: the same as z from seed 0
        out = pipe(
            batch_size=z.shape[0],
            num_inference_steps=STEPS,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )
        return out.images * 2 - 1

    return _Kind(pipe, run, unet, {}, g, 1.0, scaled=False, calls_scale_model_input=False)


def _kandinsky() -> _Kind:
    """KandinskyV22Pipeline: no scale_model_input, noise scaled by init_noise_sigma (learned variance)."""
    pipe = diffusers.KandinskyV22Pipeline(
        unet=tiny_kandinsky_unet(), scheduler=diffusers.DDPMScheduler(**KANDINSKY), movq=tiny_movq()
    )
    pipe.set_progress_bar_config(disable=True)
    emb = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))

    def run(z: Tensor) -> Tensor:
        out = pipe(
            image_embeds=emb,
            negative_image_embeds=torch.zeros_like(emb),
            latents=z.clone(),
            height=16,
            width=16,
            num_inference_steps=STEPS,
            guidance_scale=1.0,
            output_type="latent",
        )
        return out.images

    kwargs = {"encoder_hidden_states": None, "added_cond_kwargs": {"image_embeds": emb}}
    g = gaussian_of_shape((4, 8, 8), seed=1)
    return _Kind(pipe, run, pipe.unet, kwargs, g, 2.0, scaled=True, calls_scale_model_input=False)


KINDS = {"sd": _sd, "ddpm": _ddpm, "kandinsky": _kandinsky}


@pytest.fixture(scope="module")
def kinds(diffusers_pkg: Any) -> dict[str, _Kind]:
    return {name: build() for name, build in KINDS.items()}


@pytest.mark.parametrize("teleport_at,warm", [(None, False), (None, True), ("step", True)])
@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_plain_swap_is_gaussport_sample_in_every_kind_of_pipeline(
    kinds: dict[str, _Kind], name: str, teleport_at: str | None, warm: bool
) -> None:
    kind = kinds[name]
    options = {} if teleport_at is None else {"teleport_at": teleport_at}
    if warm:
        options["sigma_skip"] = kind.skip
    sched = GaussportScheduler.from_config(kind.pipe.scheduler.config, **options)
    if warm:
        sched.set_warm_start(kind.g)
    kind.pipe.scheduler = sched
    z = torch.randn(2, *kind.g.shape, generator=torch.Generator().manual_seed(0))
    counter = kind.model.forward if isinstance(kind.model.forward, ExactForward) else None
    before = len(counter.timesteps) if counter is not None else 0
    with torch.no_grad():
        out = kind.run(z)
        calls = len(counter.timesteps) - before if counter is not None else None
        den = DiffusersDenoiser(kind.model, sched, **kind.kwargs)
        full = grids.karras(STEPS, den.sigma_min, den.sigma_max)
        # The VE start the pipeline's noise stands for: its native sample z (init_noise_sigma) / alpha.
        start = z * (sched.init_noise_sigma if kind.scaled else 1.0) * math.sqrt(1 + full[0] ** 2)
        skip = None
        if warm:
            # A pipeline that never calls scale_model_input discards the first call and, unless the
            # teleport is paid at 'step', the teleport goes on one level: to the first level below skip.
            skip = kind.skip
            if teleport_at is None and not kind.calls_scale_model_input:
                skip = next(v for v in full if v < kind.skip)
        if warm:
            ref = gaussport.sample(
                den, start, full, "euler", warm_start=kind.g, sigma_skip=skip, disable=True
            )
        else:
            ref = gaussport.solve(den, start, full, "euler", disable=True)
    assert _rel(out, ref.x) < 1e-4, (name, teleport_at, warm)
    discarded = warm and (teleport_at == "step" or not kind.calls_scale_model_input)
    assert len(sched.timesteps) == ref.nfe + discarded
    if calls is not None:
        assert calls == len(sched.timesteps)


def test_ddim_pipeline_after_construction(kinds: dict[str, _Kind]) -> None:
    # DDIMPipeline's loop is DDPMPipeline's (and it passes eta): the plain swap gives the same samples.
    ddpm = kinds["ddpm"]
    ddpm.pipe.scheduler = GaussportScheduler.from_config(ddpm.pipe.scheduler.config)
    expected = ddpm.run(torch.empty(2, 1, 4, 4))
    ddim = diffusers.DDIMPipeline(unet=ddpm.pipe.unet, scheduler=ddpm.pipe.scheduler)  # converts to DDIM...
    ddim.set_progress_bar_config(disable=True)
    ddim.scheduler = GaussportScheduler.from_config(ddpm.pipe.scheduler.config)  # ... so assign after
    out = ddim(
        batch_size=2, num_inference_steps=STEPS, output_type="np", generator=torch.Generator().manual_seed(0)
    )
    assert _rel(torch.from_numpy(out.images).permute(0, 3, 1, 2) * 2 - 1, expected) < 1e-5
    with pytest.raises(ValueError, match="eta"):
        ddim(batch_size=2, num_inference_steps=5, eta=0.5, output_type="np")


def _point_model(x0: Tensor, alphas_cumprod: Tensor | None, learned_variance: bool = False) -> Any:
    """The exact prediction for data that is one point ``x0``: the Gaussian-exact forward of a
    Gaussian with zero variance (its denoiser is ``x0`` at every level), VP or flow (timestep ``1000 t``)."""
    point = Gaussian.diagonal(x0[0].double(), torch.zeros(x0[0].numel(), dtype=torch.float64))
    if alphas_cumprod is None:
        return flow_exact(point)
    return vp_exact(point, alphas_cumprod, learned_variance=learned_variance)


def _img2img(name: str, kinds: dict[str, _Kind]) -> tuple[Any, dict[str, Any], Tensor, Any]:
    """An img2img pipeline with the exact model of one data point ``x0`` (the image's latents), its
    call arguments and the peer scheduler it is compared with."""
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    if name == "kandinsky":  # slices timesteps[t_start:], never calls set_begin_index
        kandinsky = kinds["kandinsky"]
        base = diffusers.DDPMScheduler(**KANDINSKY)
        unet = tiny_kandinsky_unet()
        unet.forward = _point_model(x0, base.alphas_cumprod, learned_variance=True)
        pipe = diffusers.KandinskyV22Img2ImgPipeline(unet=unet, scheduler=base, movq=kandinsky.pipe.movq)
        image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(8))  # in [0, 1]
        with torch.no_grad():  # the pipeline's latents of the image: the data point
            x0 = pipe.movq.encode(pipe.image_processor.preprocess(image, 16, 16))["latents"]
        unet.forward = _point_model(x0, base.alphas_cumprod, learned_variance=True)
        emb = torch.randn(1, 32, generator=torch.Generator().manual_seed(9))
        args = {"image_embeds": emb, "negative_image_embeds": torch.zeros_like(emb), "image": image}
        args |= {"height": 16, "width": 16, "guidance_scale": 4.0}
        return pipe, args, x0, diffusers.DDIMScheduler.from_config(base.config)
    if name == "sd":  # set_begin_index, add_noise, scale_model_input
        base = diffusers.EulerDiscreteScheduler(**SD, steps_offset=1)
        unet = tiny_cond_unet()
        unet.forward = _point_model(x0, base.alphas_cumprod)
        pipe = diffusers.StableDiffusionImg2ImgPipeline(
            vae=tiny_vae(),
            text_encoder=None,
            tokenizer=None,
            unet=unet,
            scheduler=base,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pe = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(9))
        return pipe, {"image": x0, "prompt_embeds": pe, "guidance_scale": 1.0}, x0, base
    # sd3: set_begin_index, FlowMatch's scale_noise
    base = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    transformer = tiny_sd3_transformer()
    transformer.forward = _point_model(x0, None)
    pipe = diffusers.StableDiffusion3Img2ImgPipeline(
        transformer=transformer,
        scheduler=base,
        vae=tiny_vae(shift_factor=0.0),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pe, pooled = torch.randn(1, 5, 32), torch.randn(1, 64)
    args = {"image": x0, "prompt_embeds": pe, "pooled_prompt_embeds": pooled, "guidance_scale": 1.0}
    return pipe, args, x0, base


@pytest.mark.parametrize("name", ["kandinsky", "sd", "sd3"])
def test_img2img_ends_at_the_data_point_as_the_peers(kinds: dict[str, _Kind], name: str) -> None:
    # With the exact model of one data point the ODE ends on it, from wherever img2img starts: the
    # scheduler finds its first call from the begin index the pipeline sets (SD, SD3) or, where it
    # sets none (Kandinsky 2.2 img2img, as AnimateDiff video2video, CogVideoX, Wan video2video), from
    # the timestep.
    pipe, args, x0, peer = _img2img(name, kinds)
    pipe.set_progress_bar_config(disable=True)
    errors = {}
    for sched in (peer, GaussportScheduler.from_config(peer.config)):
        pipe.scheduler = sched
        with torch.no_grad():
            out = pipe(**args, num_inference_steps=25, strength=0.4, output_type="latent").images
        errors[type(sched).__name__] = _rel(out, x0)
    assert max(errors.values()) < 1e-5, errors
    assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)
    assert (pipe.scheduler.begin_index is None) == (name == "kandinsky")


# ---------------------------------------------------------------------------------------- saved pipelines


def _saved(kind: str) -> tuple[Any, Any, dict[str, Any]]:
    """A tiny pipeline of ``kind``, its run from fixed noise, and what from_pretrained needs besides."""

    def run_prompt(p: Any) -> Tensor:
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        return p("a photo of a cat", latents=latents, num_inference_steps=STEPS, output_type="latent").images

    if kind == "sd":
        return tiny_sd_pipeline(), run_prompt, {}
    if kind == "sd3":  # SD3 without T5, as users load it
        return tiny_sd3_pipeline(), run_prompt, {"text_encoder_3": None, "tokenizer_3": None}
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def run(p: Any) -> Tensor:
        return p(
            batch_size=1,
            num_inference_steps=STEPS,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).images

    return pipe, run, {}


def _config(scheduler: Any) -> dict[str, Any]:
    return {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}


@pytest.mark.parametrize(
    "kind",  # the SD and SD3 pipelines build text encoders (transformers): slow
    [pytest.param("sd", marks=pytest.mark.slow), pytest.param("sd3", marks=pytest.mark.slow), "ddpm"],
)
def test_a_saved_pipeline_loads_back_and_samples_the_same(kind: str, tmp_path: Any) -> None:
    pipe, run, extra = _saved(kind)
    shape = (4, 8, 8) if kind != "ddpm" else (3, 8, 8)
    gaussian_of_shape(shape, seed=3).save(tmp_path / "stats.npz")
    options = {"statistics_path": str(tmp_path / "stats.npz"), "sigma_skip": 1.0, "solver": "dpmpp_2m"}
    # The user's way in: a checkpoint saved with its own scheduler, ours passed to from_pretrained.
    pipe.save_pretrained(tmp_path / "original")
    ours = GaussportScheduler.from_config(pipe.scheduler.config, **options)
    explicit = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "original", scheduler=ours, **extra)
    explicit.set_progress_bar_config(disable=True)
    assert explicit.scheduler is ours
    pipe.scheduler = GaussportScheduler.from_config(pipe.scheduler.config, **options)
    with torch.no_grad():
        expected = run(pipe)
        assert _rel(run(explicit), expected) < 1e-5
    # Saved with GaussportScheduler: model_index.json names the defining module, the config is JSON.
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["scheduler"] == ["gaussport.adapters.diffusers.scheduler", "GaussportScheduler"]
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "saved", **extra)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is type(pipe) and isinstance(loaded.scheduler, GaussportScheduler)
    assert _config(loaded.scheduler) == _config(pipe.scheduler)
    with torch.no_grad():
        assert _rel(run(loaded), expected) < 1e-5
