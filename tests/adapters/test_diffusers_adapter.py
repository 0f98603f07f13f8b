"""diffusers: DiffusersDenoiser, the GaussportScheduler inside unmodified pipelines, latent statistics."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids, schedules
from gaussport.adapters._teleport import from_noise
from gaussport.adapters.diffusers import DiffusersDenoiser, encode_latents, fit_latent_gaussian
from gaussport.adapters.guidance import ClassifierFreeGuidance
from gaussport.analytic import Gaussian
from gaussport.solvers import History, SingleEvaluationSolver, register
from gaussport.solvers import registry as solver_registry
from gaussport.testing import gaussian_of_shape
from gaussport.testing.diffusers import (
    ExactForward,
    flow_exact,
    text_free_sd3_pipeline,
    text_free_sd_pipeline,
    tiny_sd3_transformer,
    tiny_unet,
    vp_exact,
)

diffusers = pytest.importorskip("diffusers")
from gaussport.adapters.diffusers import GaussportScheduler  # noqa: E402  (needs diffusers)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _w2(samples: Tensor, g: Gaussian) -> float:
    """Wasserstein-2 distance between the Gaussian fitted to ``samples`` and ``g`` (closed form)."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    fitted = Gaussian.fit(samples.reshape(samples.shape[0], -1).double())
    c1, c2 = fitted.cov.dense().numpy(), g.cov.dense().numpy()
    root = scipy_linalg.sqrtm(c2)
    cross = scipy_linalg.sqrtm(root @ c1 @ root).real
    mean = float((fitted.mean.reshape(-1) - g.mean.reshape(-1)).norm() ** 2)
    return math.sqrt(max(mean + float(c1.trace() + c2.trace() - 2 * cross.trace()), 0.0))


# ---------------------------------------------------------------------------------------- the denoiser


@pytest.mark.reference
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("quantize", [False, True])
def test_denoiser_matches_k_diffusion_discrete_wrappers(
    tiny_unet: Any, prediction: str, quantize: bool
) -> None:
    external = pytest.importorskip("k_diffusion.external")
    sched = diffusers.EulerDiscreteScheduler(prediction_type=prediction)
    wrap = external.DiscreteEpsDDPMDenoiser if prediction == "epsilon" else external.DiscreteVDDPMDenoiser
    theirs = wrap(lambda x, t: tiny_unet(x, t).sample, sched.alphas_cumprod, quantize=quantize)
    ours = DiffusersDenoiser(tiny_unet, sched, quantize=quantize)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.05, 0.7, 5.0, 14.0])
    with torch.no_grad():
        assert (
            _rel(ours(x * sigma[:, None, None, None], sigma), theirs(x * sigma[:, None, None, None], sigma))
            < 1e-5
        )
        # A whole k-diffusion Euler run through each wrapper.
        ks = pytest.importorskip("k_diffusion.sampling")
        sigmas = ks.get_sigmas_karras(8, float(theirs.sigma_min), float(theirs.sigma_max))
        run_theirs = ks.sample_euler(theirs, x * sigmas[0], sigmas, disable=True)
        run_ours = gaussport.solve(ours, x * sigmas[0], sigmas, "euler", disable=True).x
    assert _rel(run_ours, run_theirs) < 1e-5
    assert ours.sigma_min == pytest.approx(float(theirs.sigma_min), rel=1e-6)
    assert ours.sigma_max == pytest.approx(float(theirs.sigma_max), rel=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_every_prediction_type_gives_the_exact_denoiser_of_a_gaussian(prediction: str) -> None:
    # A model built from a Gaussian predicts eps, v or x0 exactly; converted back, all three are D_G.
    g = gaussian_of_shape((2, 3), seed=4)
    sched = diffusers.DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction
    )
    native = schedules.NativeModel(
        g, schedules.VPDiscrete(sched.alphas_cumprod), schedules.PREDICTION_ALIASES[prediction]
    )
    den = DiffusersDenoiser(lambda x, timestep: native(x, timestep), sched)
    x = g.sample(3, 3.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    assert torch.allclose(den(x, sigma), g(x, sigma), rtol=1e-9, atol=1e-10)


def test_flow_matching_denoiser_is_exact() -> None:
    g = gaussian_of_shape((2, 3), seed=5)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    native = schedules.NativeModel(g, schedules.RectifiedFlow(), "flow", time_scale=1000.0)
    den = DiffusersDenoiser(lambda x, timestep: native(x, timestep), sched)
    assert den.prediction == "flow" and den.time_scale == 1000.0 and den.sigma_max == math.inf
    x = g.sample(3, 3.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    assert torch.allclose(den(x, sigma), g(x, sigma), rtol=1e-9, atol=1e-10)


def test_denoiser_bad_input(tiny_unet: Any) -> None:
    with pytest.raises(ValueError, match="unsupported prediction_type 'score'"):
        DiffusersDenoiser(tiny_unet, diffusers.DDPMScheduler(), prediction_type="score")
    with pytest.raises(ValueError, match="needs the noise schedule"):
        DiffusersDenoiser(tiny_unet)
    sched = diffusers.DDPMScheduler()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="in_channels/out_channels"):
        DiffusersDenoiser(lambda x, timestep: x[:, :2], sched)(x, torch.ones(2))
    # Learned-variance outputs (twice the channels) keep the first half, as diffusers' pipelines do.
    eps = lambda x, timestep: torch.cat([x * 0.1, torch.full_like(x, 9.0)], 1)  # noqa: E731
    plain = lambda x, timestep: x * 0.1  # noqa: E731
    assert torch.equal(
        DiffusersDenoiser(eps, sched)(x, torch.ones(2)), DiffusersDenoiser(plain, sched)(x, torch.ones(2))
    )


def test_guidance_on_denoised_equals_the_pipelines_guidance_on_eps(tiny_cond_unet: Any) -> None:
    sched = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    pe, ne = torch.randn(2, 3, 8), torch.zeros(2, 3, 8)
    guided = ClassifierFreeGuidance(
        DiffusersDenoiser(tiny_cond_unet, sched),
        7.5,
        {"encoder_hidden_states": pe},
        {"encoder_hidden_states": ne},
    )
    sigma = torch.tensor([3.0, 3.0])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3.0
    t = DiffusersDenoiser(tiny_cond_unet, sched).timestep(sigma)
    with torch.no_grad():
        scaled = x / math.sqrt(3.0**2 + 1)
        eps_u = tiny_cond_unet(scaled, t, encoder_hidden_states=ne).sample
        eps_c = tiny_cond_unet(scaled, t, encoder_hidden_states=pe).sample
        expected = x - 3.0 * (
            eps_u + 7.5 * (eps_c - eps_u)
        )  # StableDiffusionPipeline's formula, then Euler's x0
        assert _rel(guided(x, sigma), expected) < 1e-5


# ---------------------------------------------------------------------------------------- the scheduler


@pytest.fixture()
def sd_pipe(tiny_cond_unet: Any, tiny_vae: Any) -> Any:
    base = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
    )
    return text_free_sd_pipeline(tiny_cond_unet, tiny_vae, base)


def _sd_run(pipe: Any, scheduler: Any, n: int, latents: Tensor, guidance: float = 1.0) -> Tensor:
    pipe.scheduler = scheduler
    pe = torch.randn(latents.shape[0], 3, 8, generator=torch.Generator().manual_seed(5))
    return pipe(
        prompt_embeds=pe,
        negative_prompt_embeds=torch.zeros_like(pe),
        latents=latents.clone(),
        num_inference_steps=n,
        guidance_scale=guidance,
        output_type="latent",
    ).images


def test_sd_pipeline_without_teleport_equals_eulers_karras_run(sd_pipe: Any) -> None:
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    base = sd_pipe.scheduler
    theirs = _sd_run(
        sd_pipe, diffusers.EulerDiscreteScheduler.from_config(base.config, use_karras_sigmas=True), 6, z, 3.0
    )
    ours = _sd_run(sd_pipe, GaussportScheduler.from_config(base.config), 6, z, 3.0)
    assert _rel(ours, theirs) < 1e-4


def test_sd_pipeline_with_teleport(sd_pipe: Any, tmp_path: Any) -> None:
    base = sd_pipe.scheduler
    g = gaussian_of_shape((4, 8, 8), seed=0)
    stats = tmp_path / "latents.npz"
    g.save(stats)
    exact_model = vp_exact(g, base.alphas_cumprod)
    sd_pipe.unet.forward = exact_model
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma_max = schedules.VPDiscrete(base.alphas_cumprod).sigma_max
    exact = g.flow(z.double() * sigma_max, sigma_max, 0.0)
    ours = GaussportScheduler.from_config(base.config, statistics_path=str(stats), sigma_skip=2.0)
    out = _sd_run(sd_pipe, ours, 16, z, guidance=3.0)
    calls = exact_model.calls
    assert calls == len(ours.timesteps) < 16  # the teleported steps cost nothing
    assert exact_model.batches[0] == 4  # the first call sees the CFG-doubled batch, teleported
    exact_model.calls = 0
    euler = _sd_run(
        sd_pipe, diffusers.EulerDiscreteScheduler.from_config(base.config, use_karras_sigmas=True), calls, z
    )
    assert exact_model.calls == calls
    assert _rel(out, exact) < 0.6 * _rel(euler, exact)
    # The config is JSON with the statistics path, never the statistics.
    ours.save_pretrained(tmp_path / "sched")
    saved = json.loads((tmp_path / "sched" / "scheduler_config.json").read_text())
    assert saved["statistics_path"] == str(stats) and saved["_class_name"] == "GaussportScheduler"
    assert all(not isinstance(v, list) or len(v) < 10 for v in saved.values())
    loaded = GaussportScheduler.from_pretrained(tmp_path / "sched")
    assert loaded.config.sigma_skip == 2.0 and torch.equal(_sd_run(sd_pipe, loaded, 16, z, guidance=3.0), out)


def test_a_saved_pipeline_loads_back_with_its_gaussport_scheduler(tmp_path: Any) -> None:
    # model_index.json names the module that defines the class (a module-level class), which
    # DiffusionPipeline.from_pretrained imports and checks against SchedulerMixin.
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=GaussportScheduler(teleport_at="step", rho=5.0))
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["scheduler"] == ["gaussport.adapters.diffusers.scheduler", "GaussportScheduler"]
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.scheduler, GaussportScheduler) and loaded.scheduler.config.rho == 5.0


def test_statistics_of_the_wrong_shape_fail_clearly(sd_pipe: Any) -> None:
    wrong = GaussportScheduler.from_config(sd_pipe.scheduler.config, sigma_skip=2.0)
    wrong.set_warm_start(gaussian_of_shape((4, 4, 4)))
    with pytest.raises(ValueError, match="fitted to samples of shape .*fit_latent_gaussian"):
        _sd_run(sd_pipe, wrong, 8, torch.randn(1, 4, 8, 8))


@pytest.fixture()
def ddpm_setup(diffusers_pkg: Any) -> tuple[Any, ExactForward, Gaussian]:
    unet = tiny_unet(channels=1, size=4)
    # Data well inside [-1, 1], so the pipeline's final clamp does not matter.
    g = gaussian_of_shape((1, 4, 4), seed=2, high=0.05, low=1e-3, mean_scale=0.1)
    base = diffusers.DDPMScheduler()
    exact = vp_exact(g, base.alphas_cumprod)
    unet.forward = exact
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=base)
    pipe.set_progress_bar_config(disable=True)
    return pipe, exact, g


def _ddpm_run(pipe: Any, scheduler: Any, n: int, batch: int = 2000) -> Tensor:
    pipe.scheduler = scheduler
    images = pipe(
        batch_size=batch, num_inference_steps=n, output_type="pt", generator=torch.Generator().manual_seed(0)
    ).images
    return images * 2 - 1  # output_type="pt" keeps [B, C, H, W]


def test_ddpm_pipeline(ddpm_setup: tuple[Any, ExactForward, Gaussian], tmp_path: Any) -> None:
    pipe, exact, g = ddpm_setup
    base = pipe.scheduler
    g.save(tmp_path / "stats.npz")
    plain = GaussportScheduler.from_config(base.config)  # the plain swap: no option
    _ddpm_run(pipe, plain, 10, batch=2)
    assert exact.calls == len(plain.timesteps) == 10
    tele = GaussportScheduler.from_config(
        base.config, teleport_at="step", statistics_path=str(tmp_path / "stats.npz"), sigma_skip=1.0
    )
    exact.calls = 0
    ours = _ddpm_run(pipe, tele, 24)
    calls = exact.calls
    full = GaussportScheduler.from_config(base.config, teleport_at="step")
    full.set_timesteps(24)
    below = sum(1 for s in full.sigmas[:-1].tolist() if s < 1.0)
    assert (
        calls == len(tele.timesteps) == 1 + 1 + below
    )  # the discarded call on the raw noise, 1.0, then the rest
    assert tele.timesteps[0] == pytest.approx(999.0)
    exact.calls = 0
    ddpm = _ddpm_run(pipe, diffusers.DDPMScheduler.from_config(base.config), calls)
    assert exact.calls == calls
    assert _w2(ours, g) < 0.6 * _w2(ddpm, g)


def test_flow_matching_pipeline(tiny_vae: Any, tmp_path: Any) -> None:
    transformer = tiny_sd3_transformer()
    base = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = text_free_sd3_pipeline(transformer, tiny_vae, base)
    pe, pooled = torch.randn(2, 5, 32), torch.randn(2, 64)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(scheduler: Any, n: int) -> Tensor:
        pipe.scheduler = scheduler
        return pipe(
            prompt_embeds=pe,
            pooled_prompt_embeds=pooled,
            latents=z.clone(),
            num_inference_steps=n,
            height=16,
            width=16,
            guidance_scale=1.0,
            output_type="latent",
        ).images

    # Random transformer: without teleport our Euler is FlowMatch Euler (the same first-order update).
    with torch.no_grad():
        assert (
            _rel(
                run(GaussportScheduler.from_config(base.config), 6),
                run(diffusers.FlowMatchEulerDiscreteScheduler.from_config(base.config), 6),
            )
            < 1e-4
        )
    g = gaussian_of_shape((4, 8, 8), seed=6)
    g.save(tmp_path / "stats.npz")
    model = flow_exact(g)
    transformer.forward = model
    exact = from_noise(g, z.double(), 0.0)  # the closed-form flow from pure noise to t = 0
    ours = GaussportScheduler.from_config(
        base.config, statistics_path=str(tmp_path / "stats.npz"), sigma_skip=1.0
    )
    out = run(ours, 14)
    calls = model.calls
    assert calls == len(ours.timesteps) < 14 and model.timesteps[0] == pytest.approx(1000.0)
    model.calls = 0
    theirs = run(diffusers.FlowMatchEulerDiscreteScheduler.from_config(base.config), calls)
    assert model.calls == calls and _rel(out, exact) < 0.8 * _rel(theirs, exact)


def test_scheduler_refuses_two_evaluation_solvers_and_bad_prediction_types() -> None:
    with pytest.raises(ValueError, match="once per step.*heun"):
        GaussportScheduler(solver="heun")
    with pytest.raises(ValueError, match="unsupported prediction_type"):
        GaussportScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="teleport_at='step'"):
        GaussportScheduler(prediction_type="flow_prediction", teleport_at="scale_model_input")
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        GaussportScheduler.from_config(diffusers.DDPMScheduler(rescale_betas_zero_snr=True).config)


@dataclasses.dataclass(frozen=True)
class _TwoStep(SingleEvaluationSolver[History]):
    """Test-only multistep solver: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), history in the state."""

    @property
    def order(self) -> int:
        return 2

    def init(self, x: Tensor, sigmas: Any, warm_start: Any = None) -> History:
        return History()

    def advance(
        self, x: Tensor, denoised: Tensor, sigmas: Any, i: int, state: History
    ) -> tuple[Tensor, History]:
        s, s_next = sigmas[i], sigmas[i + 1]
        h = math.log(s / s_next)
        d = denoised
        if state.sigmas:
            r = math.log(state.sigmas[-1] / s) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * state.denoised[-1]
        return (s_next / s) * x - math.expm1(-h) * d, state.push(s, denoised, keep=1)


@pytest.fixture()
def two_step() -> Any:
    register("_test_two_step")(_TwoStep)
    yield "_test_two_step"
    solver_registry.unregister("_test_two_step")


@pytest.mark.parametrize("solver", ["euler", "two_step"])
def test_scheduler_steps_equal_gaussport_solve(
    solver: str, tiny_unet: Any, request: pytest.FixtureRequest
) -> None:
    # A pipeline-style loop (scale_model_input -> model -> step) is the same integration as gaussport.solve
    # with DiffusersDenoiser; multistep history lives in the solver state the scheduler carries.
    name = request.getfixturevalue("two_step") if solver == "two_step" else solver
    sched = GaussportScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver=name)
    sched.set_timesteps(7)
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = z * sched.init_noise_sigma  # the pipeline's native sample: z sigma_t = z sigma / sqrt(1 + sigma^2)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(tiny_unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
        den = DiffusersDenoiser(tiny_unet, sched)
        grid = grids.karras(7, den.sigma_min, den.sigma_max)
        ref = gaussport.solve(den, z * grid[0], grid, name, disable=True).x
    assert _rel(x, ref) < 1e-5


def _pipeline_run_and_sample(
    sched: Any, g_data: Gaussian, g_warm: Gaussian, z: Tensor, steps: int, **options: Any
) -> tuple[Tensor, gaussport.Solution]:
    """A pipeline-style loop with ``sched`` (warm start ``g_warm``, model exact for ``g_data``) from the
    noise ``z``, and ``gaussport.sample`` on the same Karras grid from the VE start it stands for."""
    sched.set_warm_start(g_warm)
    model = vp_exact(g_data, sched.alphas_cumprod)
    sched.set_timesteps(steps)
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(model(sched.scale_model_input(x, t), t), t, x).prev_sample
    den = DiffusersDenoiser(model, sched)
    grid = grids.karras(steps, den.sigma_min, den.sigma_max)
    # The VE start the pipeline's initial (native) sample stands for: x_ve = x_t sqrt(1 + s^2) = z s.
    start = z * sched.init_noise_sigma * math.sqrt(1 + grid[0] ** 2)
    skip = sched.config.sigma_skip
    ref = gaussport.sample(
        den, start, grid, sched.config.solver, warm_start=g_warm, sigma_skip=skip, **options
    )
    return x, ref


@pytest.mark.parametrize("teleport_at", ["scale_model_input", "step"])
def test_scheduler_initialises_the_solver_once_with_the_teleport_record(teleport_at: str) -> None:
    # dpmpp_3m(seed_history=True) seeds its history from the teleport record solver.init receives. With
    # a warm start that is not the model's Gaussian, the seeds differ from the model's values: the
    # pipeline-style run equals gaussport.sample on the same grid only if the record reached init.
    g_data, g_warm = gaussian_of_shape((2, 4, 4), seed=3), gaussian_of_shape((2, 4, 4), seed=4)
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    runs = {}
    for seed_history in (True, False):
        sched = GaussportScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            solver="dpmpp_3m",
            solver_options={"seed_history": seed_history},
            sigma_skip=2.0,
            teleport_at=teleport_at,
        )
        x, ref = _pipeline_run_and_sample(sched, g_data, g_warm, z, 12, seed_history=seed_history)
        assert _rel(x, ref.x) < 1e-4
        runs[seed_history] = x
    assert _rel(runs[True], runs[False]) > 0.1  # the seeds came from the warm start


@pytest.mark.parametrize("teleport_at", ["scale_model_input", "step"])
def test_scheduler_gives_dpm_solver_v3_the_warm_starts_analytic_ems(teleport_at: str) -> None:
    # The one rule of gaussport.sampling.with_warm_start_statistics holds inside pipelines too: the
    # pipeline-style run equals gaussport.sample (which uses the Gaussian's analytic EMS), and differs
    # from DPM-Solver++ (the degenerate EMS a solver uses without them).
    g = gaussian_of_shape((2, 4, 4), seed=5)
    z = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sched = GaussportScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        solver="dpm_solver_v3",
        sigma_skip=3.0,
        teleport_at=teleport_at,
    )
    x, ref = _pipeline_run_and_sample(sched, g, g, z, 8)
    assert ref.state.ems.source == "analytic"
    assert _rel(x, ref.x) < 1e-4
    _, plain = _pipeline_run_and_sample(sched, g, g, z, 8, ems="degenerate")
    assert _rel(x, plain.x) > 100 * _rel(x, ref.x)


# ---------------------------------------------------------------------------------------- latent statistics


def test_fit_latent_gaussian(tiny_vae: Any) -> None:
    images = torch.rand(96, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # N > d = 64
    with torch.no_grad():
        dist = tiny_vae.encode(images).latent_dist
    expected_mean = dist.mean * tiny_vae.config.scaling_factor  # diffusers' convention, computed directly
    fitted = fit_latent_gaussian(tiny_vae, images, latents="mean", batch_size=40)
    assert fitted.shape == (4, 4, 4)
    assert torch.allclose(fitted.mean, expected_mean.double().mean(0), atol=1e-6)
    assert torch.allclose(fitted.cov.dense(), torch.cov(expected_mean.double().reshape(96, -1).T), atol=1e-6)
    # Sampled latents add the posterior variance (law of total variance): a larger total variance.
    sampled = fit_latent_gaussian(
        tiny_vae, [images[:50], images[50:]], generator=torch.Generator().manual_seed(1)
    )
    assert sampled.cov.trace() > fitted.cov.trace()
    tiny_vae.register_to_config(shift_factor=0.25)
    shifted = encode_latents(tiny_vae, images[:4], latents="mean")
    assert torch.allclose(shifted, (dist.mean[:4] - 0.25) * tiny_vae.config.scaling_factor, atol=1e-6)
    with pytest.raises(ValueError, match="'sample' or 'mean'"):
        encode_latents(tiny_vae, images, latents="mode")
