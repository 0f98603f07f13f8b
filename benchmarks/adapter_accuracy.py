"""Accuracy of the teleporting scheduler inside unmodified diffusers pipelines, at equal model calls.

The pipelines' models are replaced by Gaussian-exact ones (the exact epsilon / velocity for a
Gaussian fitted nowhere: a random anisotropic Gaussian), so the exact result of the probability-flow
ODE is known in closed form and every error is sampler error. For each pipeline the table gives the
relative error of the final latents against the closed-form flow (deterministic samplers) or the
Wasserstein-2 distance of the output distribution to the data Gaussian (DDPM, whose default sampler is
stochastic), for the pipeline's default scheduler and for ``GaussportScheduler`` (euler + teleport)
at the same number of model calls. CPU, seconds. Usage: ``python benchmarks/adapter_accuracy.py``.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaussport.analytic import Gaussian
from gaussport.schedules import VPDiscrete
from gaussport.testing import gaussian_of_shape
from gaussport.testing.diffusers import (
    flow_exact,
    text_free_sd3_pipeline,
    text_free_sd_pipeline,
    tiny_cond_unet,
    tiny_sd3_transformer,
    tiny_unet,
    tiny_vae,
    vp_exact,
)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def w2(samples: Tensor, g: Gaussian) -> float:
    import scipy.linalg

    fit = Gaussian.fit(samples.reshape(samples.shape[0], -1).double())
    c1, c2 = fit.cov.dense().numpy(), g.cov.dense().numpy()
    root = scipy.linalg.sqrtm(c2)
    cross = scipy.linalg.sqrtm(root @ c1 @ root).real
    mean = float((fit.mean.reshape(-1) - g.mean.reshape(-1)).norm() ** 2)
    return math.sqrt(max(mean + float(c1.trace() + c2.trace() - 2 * cross.trace()), 0.0))


def main() -> None:
    warnings.filterwarnings("ignore")
    import diffusers

    from gaussport.adapters._teleport import from_noise
    from gaussport.adapters.diffusers import GaussportScheduler

    tmp = Path(tempfile.mkdtemp())
    print(
        "| pipeline | model calls | default scheduler | error | GaussportScheduler (euler, teleport) | error "
        "|"
    )
    print("|---|---|---|---|---|---|")

    # StableDiffusionPipeline (calls scale_model_input: teleport costs nothing)
    unet, vae = tiny_cond_unet(), tiny_vae()
    base = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    g = gaussian_of_shape((4, 8, 8), seed=0, high=2.0, mean_scale=0.3)
    g.save(tmp / "sd.npz")
    model = vp_exact(g, base.alphas_cumprod)
    unet.forward = model
    pipe = text_free_sd_pipeline(unet, vae, base)
    z = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pe = torch.randn(8, 3, 8)
    smax = VPDiscrete(base.alphas_cumprod).sigma_max  # where the pipeline starts (init_noise_sigma)
    exact = g.flow(z.double() * smax, smax, 0.0)

    def sd(s: Any, n: int) -> tuple[Tensor, int]:
        pipe.scheduler, model.calls = s, 0
        out = pipe(
            prompt_embeds=pe,
            latents=z.clone(),
            num_inference_steps=n,
            guidance_scale=1.0,
            output_type="latent",
        ).images
        return out, model.calls

    for n in (12, 25, 50):
        ours, calls = sd(
            GaussportScheduler.from_config(base.config, statistics_path=str(tmp / "sd.npz"), sigma_skip=2.0),
            n,
        )
        theirs, _ = sd(
            diffusers.EulerDiscreteScheduler.from_config(base.config, use_karras_sigmas=True), calls
        )
        print(
            f"| StableDiffusionPipeline | {calls} | Euler (Karras) | {rel(theirs, exact):.3f} | "
            "sigma_skip=2, "
            f"{n} requested steps | {rel(ours, exact):.3f} |"
        )

    # DDPMPipeline (no scale_model_input: one discarded call)
    unet2 = tiny_unet(channels=1, size=4)
    g2 = gaussian_of_shape((1, 4, 4), seed=2, high=0.05, mean_scale=0.1)
    g2.save(tmp / "ddpm.npz")
    ddpm_base = diffusers.DDPMScheduler()
    model2 = vp_exact(g2, ddpm_base.alphas_cumprod)
    unet2.forward = model2
    ddpm = diffusers.DDPMPipeline(unet=unet2, scheduler=ddpm_base)
    ddpm.set_progress_bar_config(disable=True)

    def run_ddpm(s: Any, n: int) -> tuple[Tensor, int]:
        ddpm.scheduler, model2.calls = s, 0
        img = ddpm(
            batch_size=4000,
            num_inference_steps=n,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )
        return img.images * 2 - 1, model2.calls

    for n in (12, 24, 48):
        ours, calls = run_ddpm(
            GaussportScheduler.from_config(
                ddpm_base.config, teleport_at="step", sigma_skip=1.0, statistics_path=str(tmp / "ddpm.npz")
            ),
            n,
        )
        theirs, _ = run_ddpm(diffusers.DDPMScheduler.from_config(ddpm_base.config), calls)
        print(
            f"| DDPMPipeline (W2 of 4000 samples) | {calls} | DDPM (ancestral) | {w2(theirs, g2):.3f} | "
            "sigma_skip=1, "
            f"{n} requested steps | {w2(ours, g2):.3f} |"
        )

    # StableDiffusion3Pipeline (flow matching, starts at t = 1: one discarded call)
    tr = tiny_sd3_transformer()
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sd3 = text_free_sd3_pipeline(tr, vae, fm)
    model3 = flow_exact(g, time_scale=1000.0)
    tr.forward = model3
    exact3 = from_noise(g, z.double(), 0.0)

    def run_sd3(s: Any, n: int) -> tuple[Tensor, int]:
        sd3.scheduler, model3.calls = s, 0
        out = sd3(
            prompt_embeds=torch.randn(8, 5, 32),
            pooled_prompt_embeds=torch.randn(8, 64),
            latents=z.clone(),
            num_inference_steps=n,
            height=16,
            width=16,
            guidance_scale=1.0,
            output_type="latent",
        ).images
        return out, model3.calls

    for n in (12, 25, 50):
        ours, calls = run_sd3(
            GaussportScheduler.from_config(fm.config, statistics_path=str(tmp / "sd.npz"), sigma_skip=1.0), n
        )
        theirs, _ = run_sd3(diffusers.FlowMatchEulerDiscreteScheduler.from_config(fm.config), calls)
        print(
            f"| StableDiffusion3Pipeline (shift 3) | {calls} | FlowMatchEuler | {rel(theirs, exact3):.3f} | "
            f"sigma_skip=1 (t=0.5), {n} requested steps | {rel(ours, exact3):.3f} |"
        )


if __name__ == "__main__":
    main()
