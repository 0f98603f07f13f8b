"""GaussportScheduler keeps the contract of diffusers' schedulers.

The behaviours diffusers' own scheduler test mixin (``SchedulerCommonTest``) checks -- config
save/load and ``from_config`` round trips, compatibles, ``add_noise``, ``scale_model_input``,
``set_timesteps(device=)``, ``step(return_dict=False)``, timestep dtype, ``order``, the begin index,
fp16 inputs, 1 to 1000 steps, custom timesteps and sigmas -- and the conventions pipelines rely on:
the step located from its ``timestep`` when no begin index is set (``index_for_timestep``), and
``init_noise_sigma`` right from construction. Pipelines themselves: test_diffusers_pipelines.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from gaussport import schedules
from gaussport.testing import gaussian_of_shape

diffusers = pytest.importorskip("diffusers")
from gaussport.adapters.diffusers import GaussportScheduler  # noqa: E402  (needs diffusers)

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

CONFIGS = {
    "default": {},
    "sd": SD,
    "multistep": {**SD, "solver": "dpmpp_3m", "solver_options": {"seed_history": False}, "rho": 5.0},
    "exponential": {**SD, "sigma_schedule": "exponential", "sigma_min": 0.05, "sigma_max": 10.0},
    "v": {**SD, "prediction_type": "v_prediction", "sigma_schedule": "linspace"},
    "trained_betas": {"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4]},
    "teleport": {**SD, "sigma_skip": 2.0, "teleport_at": "step"},
    "flow": {"prediction_type": "flow_prediction", "shift": 3.0},
    "flow_dynamic": {"prediction_type": "flow_prediction", "use_dynamic_shifting": True},
}


def _model(sample: Tensor, t: Any) -> Tensor:
    """The mixin's dummy model: a deterministic function of the input and the timestep."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *(1,) * (sample.ndim - 1))
    return (sample * t / (t + 1)).to(sample.dtype)


def _run(sched: Any, x: Tensor, n: int = 4, **set_timesteps: Any) -> Tensor:
    """A pipeline's loop: ``set_timesteps``, then ``scale_model_input`` -> model -> ``step``."""
    if sched.config.use_dynamic_shifting:  # Flux-style: the pipeline passes mu
        set_timesteps.setdefault("mu", 0.5)
    sched.set_timesteps(n, **set_timesteps)
    for t in sched.timesteps:
        x = sched.step(_model(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x


def _sample(seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trips_keep_the_scheduler(name: str, tmp_path: Any) -> None:
    sched = GaussportScheduler(**CONFIGS[name])
    if sched.config.sigma_skip is not None:
        sched.set_warm_start(gaussian_of_shape((3, 4, 4), seed=1))
    x = _sample(1) * sched.init_noise_sigma
    ref = _run(sched, x)
    sched.save_config(tmp_path)
    loaded = GaussportScheduler.from_pretrained(tmp_path)
    copied = GaussportScheduler.from_config(sched.config)
    config = {k: v for k, v in sched.config.items() if k != "_use_default_values"}
    for other in (loaded, copied):
        assert {k: v for k, v in other.config.items() if k != "_use_default_values"} == config
        if sched.warm_start is not None:  # set_warm_start is in memory only, by design
            other.set_warm_start(sched.warm_start)
        assert torch.equal(_run(other, x), ref)
    if "trained_betas" in CONFIGS[name]:
        assert torch.equal(loaded.alphas_cumprod, sched.alphas_cumprod)


def test_compatible_schedulers_round_trip_the_config() -> None:
    # Every listed compatible builds from our config, and our config comes back unchanged through it.
    sched = GaussportScheduler(**CONFIGS["multistep"], sigma_skip=2.0, statistics_path="stats.npz")
    assert sched.compatibles and all(c is not None for c in sched.compatibles)
    assert diffusers.EulerDiscreteScheduler in sched.compatibles
    init_keys = set(GaussportScheduler.__init__.__code__.co_varnames)
    for cls in sched.compatibles:
        theirs = cls.from_config(sched.config)
        back = GaussportScheduler.from_config(theirs.config)
        assert {k: v for k, v in back.config.items() if k in sched.config} == dict(sched.config), cls
        assert not {k for k in back.config if k not in sched.config} & init_keys


def test_from_config_of_a_flow_matching_config_implies_flow_prediction() -> None:
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours = GaussportScheduler.from_config(fm.config)
    assert ours.config.prediction_type == "flow_prediction" and ours.config.shift == 3.0
    assert ours.alphas_cumprod is None and ours.init_noise_sigma == 1.0


# ---------------------------------------------------------------------------------------- API


def test_public_api_order_timesteps_and_sigmas() -> None:
    sched = GaussportScheduler(**SD)
    assert sched.order == 1 and len(sched) == 1000
    sample = _sample(0)
    assert sched.scale_model_input(sample, 0.0) is sample  # before set_timesteps, as the mixin calls it
    for attribute in ("init_noise_sigma", "scale_model_input", "step", "add_noise", "scale_noise"):
        assert hasattr(sched, attribute)
    for device in ("cpu", torch.device("cpu"), None):
        sched.set_timesteps(10, device=device)
        assert sched.timesteps.dtype == torch.float32 and sched.timesteps.device == torch.device("cpu")
        assert sched.num_inference_steps == len(sched.timesteps) == 10
        assert bool((sched.timesteps[1:] < sched.timesteps[:-1]).all())
        # The pipelines' `sigmas`: one level per timestep and the final 0, on the CPU (no device syncs).
        assert sched.sigmas.dtype == torch.float32 and sched.sigmas.device == torch.device("cpu")
        assert len(sched.sigmas) == 11 and float(sched.sigmas[-1]) == 0.0


@pytest.mark.parametrize("name", ["sd", "flow"])
def test_step_without_return_dict_is_the_outputs_tuple(name: str) -> None:
    x = _sample(2)
    outputs = []
    for return_dict in (True, False):
        sched = GaussportScheduler(**CONFIGS[name])
        sched.set_timesteps(5)
        t = sched.timesteps[1]
        out = sched.step(_model(x, t), t, x, return_dict=return_dict)
        outputs.append((out.prev_sample, out.pred_original_sample) if return_dict else out)
    assert isinstance(outputs[1], tuple) and len(outputs[1]) == 2
    assert all(torch.equal(a, b) for a, b in zip(outputs[0], outputs[1], strict=True))


def test_scale_model_input_is_the_sample_except_for_the_teleport() -> None:
    # The sample is held in native coordinates: the model input is the sample itself, at every call.
    sched = GaussportScheduler(**SD)
    sched.set_timesteps(6)
    x = _sample(3)
    for t in sched.timesteps:
        assert sched.scale_model_input(x, t) is x
        x = sched.step(_model(x, t), t, x).prev_sample
    # With a teleport planned inside scale_model_input, call 0's input is the teleported sample.
    g = gaussian_of_shape((3, 4, 4), seed=2)
    tele = GaussportScheduler(**SD, sigma_skip=2.0)
    tele.set_warm_start(g)
    tele.set_timesteps(12)
    z = _sample(4, torch.float64)
    vp = schedules.VPDiscrete(tele.alphas_cumprod)
    assert tele.sigmas[0].item() == pytest.approx(2.0, rel=1e-6)  # call 0 is already at sigma_skip
    assert tele.timesteps[0].item() == pytest.approx(vp.t_at(2.0), rel=1e-6)
    model_input = tele.scale_model_input(z * tele.init_noise_sigma, tele.timesteps[0])
    expected = g.flow(z * vp.sigma_max, vp.sigma_max, 2.0) / math.sqrt(1 + 2.0**2)
    assert torch.allclose(model_input, expected, rtol=1e-9, atol=1e-9)


def test_add_noise_is_eulers_in_native_coordinates() -> None:
    # Euler holds VE samples x0 + sigma noise; this scheduler native ones, alpha (x0 + sigma noise).
    ours = GaussportScheduler(**SD)
    euler = diffusers.EulerDiscreteScheduler(**SD, use_karras_sigmas=True)
    ours.set_timesteps(10)
    euler.set_timesteps(10)
    assert torch.allclose(ours.timesteps, euler.timesteps, atol=2e-3)
    x0, noise = _sample(5), _sample(6)
    for k in (0, 4, 9):
        sigma = float(euler.sigmas[k])
        theirs = euler.add_noise(x0, noise, euler.timesteps[k : k + 1].expand(2))
        assert (
            _rel(ours.add_noise(x0, noise, ours.timesteps[k : k + 1]), theirs / math.sqrt(1 + sigma**2))
            < 1e-5
        )
    # Per-sample timesteps, dtype and shape preserved (fp16 training batches).
    mixed = ours.add_noise(x0.half(), noise.half(), ours.timesteps[[0, 9]])
    assert mixed.dtype == torch.float16 and mixed.shape == x0.shape
    assert _rel(mixed[1:], ours.add_noise(x0[1:], noise[1:], ours.timesteps[9:])) < 1e-3


def test_scale_noise_is_flow_matchings() -> None:
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours = GaussportScheduler.from_config(fm.config)
    fm.set_timesteps(8)
    ours.set_timesteps(8)
    assert torch.allclose(ours.timesteps, fm.timesteps, atol=1e-3)
    x0, noise = _sample(7), _sample(8)
    for k in (0, 3, 7):
        t = fm.timesteps[k : k + 1]
        assert _rel(ours.scale_noise(x0, t, noise), fm.scale_noise(x0, t, noise)) < 1e-6


@pytest.mark.parametrize("name", ["sd", "v", "flow"])
def test_fp16_inputs_give_fp16_outputs_close_to_fp32(name: str) -> None:
    runs = {}
    for dtype in (torch.float32, torch.float16):
        sched = GaussportScheduler(**CONFIGS[name])
        runs[dtype] = _run(sched, _sample(9, dtype) * sched.init_noise_sigma, n=8)
    assert runs[torch.float16].dtype == torch.float16 and bool(torch.isfinite(runs[torch.float16]).all())
    assert _rel(runs[torch.float16], runs[torch.float32]) < 1e-2


@pytest.mark.parametrize(
    "n",
    [1, 2, 3, 10, 100, pytest.param(999, marks=pytest.mark.slow), pytest.param(1000, marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("name", ["sd", "v", "flow"])
def test_every_step_count_from_1_to_1000(name: str, n: int) -> None:
    sched = GaussportScheduler(**CONFIGS[name])
    x = _run(sched, _sample(10) * sched.init_noise_sigma, n=n)
    assert len(sched.timesteps) == n and sched.step_index == n and bool(torch.isfinite(x).all())
    assert bool((sched.timesteps[1:] < sched.timesteps[:-1]).all())


def test_custom_sigmas_and_timesteps() -> None:
    # VE levels as Euler takes them, the last included: the same run (timesteps, levels) as Euler's.
    sigmas = [14.6, 6.0, 2.5, 1.0, 0.3, 0.0]
    ours, euler = GaussportScheduler(**SD), diffusers.EulerDiscreteScheduler(**SD)
    for grid in (sigmas, sigmas[:-1]):  # ending at 0, or above it (a first pass)
        ours.set_timesteps(sigmas=grid)
        euler.set_timesteps(sigmas=grid)
        assert torch.allclose(ours.sigmas, euler.sigmas) and len(ours.timesteps) == len(grid) - 1
        assert torch.allclose(ours.timesteps, euler.timesteps.float(), atol=1e-3)
    assert ours.init_noise_sigma == pytest.approx(14.6 / math.sqrt(1 + 14.6**2))
    assert bool(torch.isfinite(_run(ours, _sample(11), n=None, sigmas=sigmas)).all())
    # Model timesteps: used as they are.
    ours.set_timesteps(timesteps=[999, 700, 300, 50])
    assert ours.timesteps.tolist() == [999.0, 700.0, 300.0, 50.0]
    # Flow times before the shift, as FlowMatch takes them (SD3/Flux pipelines pass them).
    fm = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow = GaussportScheduler.from_config(fm.config)
    times = [1.0, 0.75, 0.5, 0.25]
    fm.set_timesteps(sigmas=times)
    flow.set_timesteps(sigmas=times)
    assert torch.allclose(flow.timesteps, fm.timesteps, atol=1e-3)
    with pytest.raises(ValueError, match="decreas"):
        GaussportScheduler(**SD).set_timesteps(sigmas=[1.0, 2.0, 0.5])


# ---------------------------------------------------------------------------------------- begin index


def test_begin_index_starts_the_run_and_set_timesteps_resets_it() -> None:
    sched = GaussportScheduler(**SD)
    sched.set_timesteps(10)
    assert sched.begin_index is None and sched.step_index is None
    sched.set_begin_index(4)
    x = _sample(12)
    # The begin index wins over the timestep passed, as in diffusers' schedulers.
    first = sched.step(_model(x, sched.timesteps[4]), sched.timesteps[0], x).prev_sample
    assert sched.step_index == 5
    located = GaussportScheduler(**SD)
    located.set_timesteps(10)
    assert torch.equal(
        located.step(_model(x, sched.timesteps[4]), located.timesteps[4], x).prev_sample, first
    )
    assert located.step_index == 5 and located.begin_index is None
    sched.set_timesteps(10)
    assert sched.begin_index is None and sched.step_index is None


# ------------------------------------------------------------------------------- item: the timestep


def _point_model(x0: Tensor, alphas_cumprod: Tensor) -> Any:
    """The exact epsilon of data that is one point ``x0``: ``(x_t - alpha x0) / sigma_t``."""
    vp = schedules.VPDiscrete(alphas_cumprod)

    def model(x_t: Tensor, t: Any) -> Tensor:
        alpha, sigma = vp.alpha_sigma(torch.as_tensor(t, dtype=torch.float64).reshape(-1))
        view = (-1,) + (1,) * (x_t.ndim - 1)
        return ((x_t.double() - alpha.reshape(view) * x0.double()) / sigma.reshape(view)).to(x_t.dtype)

    return model


def _img2img(sched: Any, model: Any, x0: Tensor, noise: Tensor, n: int, strength: float) -> Tensor:
    """The loop of the img2img pipelines that never call set_begin_index (AnimateDiff video2video,
    CogVideoX, Wan video2video, Kandinsky 2.2 img2img): slice the timesteps, noise the image to the first."""
    sched.set_timesteps(n)
    t_start = max(n - min(int(n * strength), n), 0)
    timesteps = sched.timesteps[t_start * sched.order :]
    x = sched.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
    for t in timesteps:
        x = sched.step(model(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x


def test_the_step_is_located_from_its_timestep_without_a_begin_index() -> None:
    x0, noise = _sample(13), _sample(14)
    euler = diffusers.EulerDiscreteScheduler(**SD, use_karras_sigmas=True)
    ours = GaussportScheduler(**SD)
    model = _point_model(x0, euler.alphas_cumprod)
    errors = {}
    for name, sched in (("euler", euler), ("gaussport", ours)):
        errors[name] = _rel(_img2img(sched, model, x0, noise, 25, 0.4), x0)
    assert errors["euler"] < 1e-5 and errors["gaussport"] < 1e-5, errors
    assert ours.step_index == len(ours.timesteps) and ours.begin_index is None


def test_index_for_timestep_follows_diffusers() -> None:
    sched = GaussportScheduler(**SD)
    sched.set_timesteps(6)
    assert [sched.index_for_timestep(t) for t in sched.timesteps] == list(range(6))
    # Repeated timesteps: the second (a run that starts there must not skip the level), as Euler's.
    repeated = torch.tensor([999.0, 500.0, 500.0, 200.0, 200.0, 0.0])
    euler = diffusers.EulerDiscreteScheduler()
    for t in (999.0, 500.0, 200.0, 0.0):
        assert sched.index_for_timestep(t, repeated) == euler.index_for_timestep(torch.tensor(t), repeated)
    # Rounded timesteps (pipelines that cast them): the nearest within half a unit; else a clear error.
    assert sched.index_for_timestep(round(float(sched.timesteps[2]))) == 2
    with pytest.raises(ValueError, match="not one of this run's timesteps"):
        sched.index_for_timestep(float(sched.timesteps[2]) + 3.0)


# ------------------------------------------------------------------------------- item: init_noise_sigma


@pytest.mark.parametrize("name", ["default", "sd", "exponential", "v", "flow", "flow_dynamic"])
def test_init_noise_sigma_is_right_from_construction(name: str) -> None:
    # Pipelines that scale their latents before set_timesteps (BlipDiffusion) get the value of the run.
    sched = GaussportScheduler(**CONFIGS[name])
    before = sched.init_noise_sigma
    for n in (5, 50):
        sched.set_timesteps(n, mu=0.5 if sched.config.use_dynamic_shifting else None)
        assert sched.init_noise_sigma == pytest.approx(before, rel=1e-9)
    if sched.config.prediction_type == "flow_prediction":
        assert before == 1.0  # the state at t = 1 is the noise itself
        return
    # The native scale of Euler's VE start: sigma_t = sigma / sqrt(1 + sigma^2) (157.4 for the default).
    euler = diffusers.EulerDiscreteScheduler.from_config(sched.config, use_karras_sigmas=True)
    sigma = float(euler.init_noise_sigma) if name != "exponential" else 10.0
    assert before == pytest.approx(sigma / math.sqrt(1 + sigma**2), rel=1e-6)
    if name == "default":
        assert float(euler.init_noise_sigma) == pytest.approx(157.4, abs=0.05)
