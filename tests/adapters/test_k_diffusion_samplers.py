"""k-diffusion drop-in samplers: parity with k-diffusion, callbacks, signatures, front-end conventions."""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters import k_diffusion as gk
from gaussport.adapters.guidance import ClassConditionalGaussian
from gaussport.analytic import anisotropic_mixture
from gaussport.solvers import SingleEvaluationSolver
from gaussport.testing import gaussian_of_shape

K = pytest.importorskip("k_diffusion")
ks = K.sampling

# Registered names whose k-diffusion namesake integrates something else (none so far). Each entry
# must say why; the parity tests run over every other name both libraries have.
KNOWN_DIFFERENT: dict[str, str] = {}
SHARED = sorted(
    n for n in gaussport.solvers.available() if hasattr(ks, f"sample_{n}") and n not in KNOWN_DIFFERENT
)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _unet_denoiser(unet: Any, diffusers_pkg: Any, prediction: str = "epsilon") -> tuple[Any, Any]:
    sched = diffusers_pkg.EulerDiscreteScheduler()
    wrap = K.external.DiscreteEpsDDPMDenoiser if prediction == "epsilon" else K.external.DiscreteVDDPMDenoiser
    return wrap(lambda x, t, **kw: unet(x, t, **kw).sample, sched.alphas_cumprod, quantize=False), sched


def test_every_built_in_solver_has_a_module_level_sampler() -> None:
    # Explicit module attributes (visible to type checkers), listed in __all__, for every solver
    # registered by gaussport itself; plugins' solvers go through as_k_diffusion_sampler.
    module_source = Path(gk.__file__).read_text()
    for name in gaussport.solvers.available():
        assert f"sample_{name}" in gk.__all__
        assert f'\nsample_{name} = as_k_diffusion_sampler("{name}")' in module_source
        fn = getattr(gk, f"sample_{name}")
        assert fn.__name__ == f"sample_{name}" and callable(fn)
        params = inspect.signature(fn).parameters
        assert list(params)[:6] == ["model", "x", "sigmas", "extra_args", "callback", "disable"]
        assert {"warm_start", "sigma_skip"} <= set(params)
        assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in list(params)[6:])
    with pytest.raises(AttributeError):
        gk.sample_no_such_solver  # noqa: B018


@pytest.mark.reference
@pytest.mark.parametrize("name", SHARED)
def test_matches_k_diffusion_on_a_unet_called_as_k_diffusion_calls_it(
    name: str, tiny_unet: Any, diffusers_pkg: Any
) -> None:
    # Same model wrapper, same sigmas from get_sigmas_karras, x = noise * sigmas[0], float32 throughout.
    model, _ = _unet_denoiser(tiny_unet, diffusers_pkg)
    sigmas = ks.get_sigmas_karras(6, float(model.sigma_min), float(model.sigma_max))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    theirs_cb: list[dict[str, Any]] = []
    ours_cb: list[dict[str, Any]] = []
    theirs = getattr(ks, f"sample_{name}")(model, x.clone(), sigmas, callback=theirs_cb.append, disable=True)
    ours = getattr(gk, f"sample_{name}")(model, x.clone(), sigmas, callback=ours_cb.append, disable=True)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert _rel(ours, theirs) < 2e-5
    assert len(ours_cb) == len(theirs_cb) == len(sigmas) - 1
    for mine, ref in zip(ours_cb, theirs_cb, strict=True):
        assert set(mine) == set(ref) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert mine["i"] == ref["i"]
        assert float(mine["sigma"]) == float(ref["sigma"]) and float(mine["sigma_hat"]) == float(
            ref["sigma_hat"]
        )
        assert _rel(mine["denoised"], ref["denoised"]) < 2e-5 and _rel(mine["x"], ref["x"]) < 2e-5


@pytest.mark.reference
@pytest.mark.parametrize("name", SHARED)
@pytest.mark.parametrize("grid", ["karras", "not-ending-in-zero", "img2img"])
def test_matches_k_diffusion_in_float64(name: str, grid: str) -> None:
    mixture = anisotropic_mixture(dim=8, n_components=3, seed=2)  # a nonlinear exact denoiser
    sig = {
        "karras": grids.karras(9, 0.002, 80.0),
        "not-ending-in-zero": grids.exponential(7, 0.05, 14.6, append_zero=False),
        "img2img": grids.karras(12, 0.002, 80.0)[5:],
    }[grid]
    sigmas = torch.tensor(sig, dtype=torch.float64)
    x = mixture.sample(4, sig[0], torch.Generator().manual_seed(1), dtype=torch.float64)
    theirs = getattr(ks, f"sample_{name}")(mixture, x.clone(), sigmas, disable=True)
    ours = getattr(gk, f"sample_{name}")(mixture, x.clone(), sigmas, disable=True)
    assert _rel(ours, theirs) < 1e-10


@pytest.mark.parametrize(
    "sigmas",
    [
        torch.tensor(grids.karras(5, 0.01, 20.0), dtype=torch.float32),
        list(grids.karras(5, 0.01, 20.0)),
        torch.tensor(grids.karras(5, 0.01, 20.0), dtype=torch.float64),
    ],
    ids=["float32-tensor", "list", "float64-tensor"],
)
def test_sigma_containers_and_dtypes(sigmas: Any) -> None:
    g = gaussian_of_shape((6,), seed=3)
    x = g.sample(3, 20.0, torch.Generator().manual_seed(0))
    ref = gaussport.solve(g, x, grids.karras(5, 0.01, 20.0), "euler", disable=True).x
    out = gk.sample_euler(g, x, sigmas, disable=True)
    assert out.dtype == x.dtype and _rel(out, ref) < 1e-6


def test_length_one_grid_returns_x_unchanged() -> None:
    calls = []
    x = torch.randn(2, 3)
    assert gk.sample_heun(lambda x, s: calls.append(1) or x, x, torch.tensor([3.0])) is x
    assert not calls


def test_teleport_callbacks_once_per_interval_and_fewer_calls() -> None:
    g = gaussian_of_shape((2, 3, 3), seed=1, high=1.0)
    sig = torch.tensor(grids.karras(10, 0.002, 80.0))
    x = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    calls: list[int] = []

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        calls.append(1)
        return g(x, sigma)

    seen: list[dict[str, Any]] = []
    sampler = gk.as_k_diffusion_sampler("euler", warm_start=g, sigma_skip=3.0)
    out = sampler(model, x, sig, callback=seen.append, disable=True)
    assert [d["i"] for d in seen] == list(range(len(sig) - 1))
    assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen)
    covered = sum(1 for i in range(len(sig) - 1) if float(sig[i + 1]) >= 3.0)
    assert len(calls) == len(sig) - 1 - covered
    for d in seen[:covered]:  # teleported intervals: the state on the exact path, the Gaussian's denoised
        s = float(d["sigma"])
        assert torch.allclose(d["x"], g.flow(x, 80.0, s), rtol=1e-4, atol=1e-4)
        assert torch.allclose(d["denoised"], g(d["x"], torch.full((3,), s)), rtol=1e-4, atol=1e-4)
    assert float(seen[covered]["sigma"]) == pytest.approx(3.0)
    # Exact model + exact teleport: only the solver's steps below 3.0 carry error, so it beats plain Euler.
    exact = g.flow(x.double(), 80.0, 0.0)
    plain = gk.sample_euler(model, x, sig, disable=True)
    assert _rel(out, exact) < _rel(plain, exact)


def test_teleport_edge_cases_img2img_and_split_sigmas() -> None:
    g = gaussian_of_shape((5,), seed=2, high=1.0)
    full = grids.karras(12, 0.01, 40.0)
    x = g.sample(4, 40.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = gk.as_k_diffusion_sampler("heun", warm_start=g, sigma_skip=5.0)
    T = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # img2img: the grid starts below sigma_skip -> no teleport, identical to the plain solver.
    low = full[6:]
    x_low = g.sample(4, low[0], torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(
        sampler(g, x_low, T(low), disable=True), gk.sample_heun(g, x_low, T(low), disable=True)
    )
    # SplitSigmas: a first pass ending above sigma_skip is teleported entirely (0 calls); the second pass
    # teleports on from there. Flow maps compose exactly, so two passes equal one.
    high, rest = T(full[:4]), T(full[3:])
    calls = []
    counted = lambda x, s: calls.append(1) or g(x, s)  # noqa: E731
    mid = sampler(counted, x, high, disable=True)
    assert not calls and torch.allclose(mid, g.flow(x, 40.0, full[3]), rtol=1e-12, atol=1e-12)
    two = sampler(g, mid, rest, disable=True)
    one = sampler(g, x, T(full), disable=True)
    assert _rel(two, one) < 1e-12


def test_respace_keeps_the_number_of_steps() -> None:
    g = gaussian_of_shape((4,), seed=5)
    sig = torch.tensor(grids.karras(8, 0.01, 40.0), dtype=torch.float64)
    x = g.sample(2, 40.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[dict[str, Any]] = []
    calls = []
    counted = lambda x, s: calls.append(1) or g(x, s)  # noqa: E731
    gk.sample_euler(
        counted, x, sig, callback=seen.append, disable=True, warm_start=g, sigma_skip=4.0, teleport="respace"
    )
    assert len(calls) == len(seen) == len(sig) - 1
    assert float(seen[0]["sigma"]) == pytest.approx(4.0)


def test_statistics_file_and_bad_input(tmp_path: Any) -> None:
    g = gaussian_of_shape((2, 2, 2), seed=0)
    path = tmp_path / "stats.npz"
    g.save(path)
    sig = torch.tensor(grids.karras(6, 0.01, 10.0))
    x = torch.randn(2, 2, 2, 2) * 10
    by_path = gk.sample_euler(g, x, sig, warm_start=str(path), sigma_skip=2.0, disable=True)
    by_object = gk.sample_euler(g, x, sig, warm_start=g, sigma_skip=2.0, disable=True)
    assert torch.equal(by_path, by_object)
    with pytest.raises(ValueError, match="fitted to samples of shape"):
        gk.sample_euler(g, torch.randn(2, 3, 2, 2), sig, warm_start=g, sigma_skip=2.0, disable=True)
    with pytest.raises(ValueError, match="needs sigma_skip"):
        gk.sample_euler(g, x, sig, warm_start=g, disable=True)
    with pytest.raises(ValueError, match="without warm_start"):
        gk.sample_euler(g, x, sig, sigma_skip=2.0, disable=True)
    with pytest.raises(FileNotFoundError, match="Gaussian.fit"):
        gk.sample_euler(g, x, sig, warm_start=str(tmp_path / "missing.npz"), sigma_skip=2.0, disable=True)
    with pytest.raises(ValueError, match="shape of x"):
        gk.sample_euler(lambda x, s: x[:, :1], x, sig, disable=True)
    with pytest.raises(TypeError, match="no option"):
        gk.as_k_diffusion_sampler("euler", s_churn=1.0)
    with pytest.raises(TypeError):
        gk.sample_euler(g, x, sig, s_churn=1.0)  # a real signature: unknown keywords are rejected
    with pytest.raises(ValueError, match="parameterization"):
        gk.sample_euler(g, x, sig, parameterization="vp", disable=True)


def test_class_conditional_teleport_uses_the_models_labels() -> None:
    mixture = anisotropic_mixture(dim=6, n_components=3, seed=4)
    per_class = ClassConditionalGaussian.from_mixture(mixture, label_key="y")
    labels = torch.tensor([2, 0, 1, 2])
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20.0

    def model(x: Tensor, sigma: Tensor, y: Tensor) -> Tensor:  # class-conditional exact denoiser
        return torch.stack(
            [mixture.components[int(k)](x[b : b + 1], sigma[b : b + 1])[0] for b, k in enumerate(y)]
        )

    sig = torch.tensor(grids.karras(8, 0.01, 20.0), dtype=torch.float64)
    out = gk.sample_euler(
        model, x, sig, extra_args={"y": labels}, warm_start=per_class, sigma_skip=float(sig[-2]), disable=True
    )
    # Teleport to sigma_min with each sample's own class Gaussian, then the last step x = D(x, sigma_min).
    for b, k in enumerate(labels.tolist()):
        comp = mixture.components[k]
        at_min = comp.flow(x[b : b + 1], 20.0, float(sig[-2]))
        assert torch.allclose(out[b : b + 1], comp(at_min, sig[-2:-1]), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="class labels"):
        gk.sample_euler(
            model, x, sig, extra_args={"z": labels}, warm_start=per_class, sigma_skip=1.0, disable=True
        )


@dataclasses.dataclass(frozen=True)
class _Relaxed(SingleEvaluationSolver[None]):
    """A test-only solver with options (not registered): x_next = D + (x - D) * ratio ** power."""

    power: float = 1.0
    offset: float = 0.0

    @property
    def order(self) -> int:
        return 1

    def advance(self, x: Tensor, denoised: Tensor, sigmas: Any, i: int, state: None) -> tuple[Tensor, None]:
        ratio = sigmas[i + 1] / sigmas[i]
        return denoised + (x - denoised) * ratio**self.power + self.offset, None


def test_solver_options_become_real_keyword_parameters() -> None:
    sampler = gk.as_k_diffusion_sampler(_Relaxed(), offset=0.5)
    params = inspect.signature(sampler).parameters
    assert params["power"].default == 1.0 and params["offset"].default == 0.5
    assert params["power"].kind is inspect.Parameter.KEYWORD_ONLY
    x = torch.ones(1, 2, dtype=torch.float64)
    zero = lambda x, s: torch.zeros_like(x)  # noqa: E731
    assert torch.equal(
        sampler(zero, x, [4.0, 1.0], disable=True), torch.full((1, 2), 0.25 + 0.5, dtype=torch.float64)
    )
    assert torch.equal(
        sampler(zero, x, [4.0, 1.0], disable=True, power=2.0, offset=0.0),
        torch.full((1, 2), 1 / 16, dtype=torch.float64),
    )


# ---------------------------------------------------------------------------------------- front-ends
# The two functions below imitate how AUTOMATIC1111 and ComfyUI call k-diffusion samplers
# (docs/peer-conventions.md#how-front-ends-call-samplers); they are written from that description, not
# copied from either project.


def a1111_call(
    func: Any,
    model_wrap: Any,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any],
    callback: Any,
    ui_options: dict[str, Any],
) -> Tensor:
    """A1111's KDiffusionSampler: options are passed only if the sampler's signature names them."""
    parameters = inspect.signature(func).parameters
    kwargs: dict[str, Any] = {}
    if "sigmas" in parameters:
        kwargs["sigmas"] = sigmas
    if "eta" in parameters:
        kwargs["eta"] = 1.0
    for name in ("s_churn", "s_tmin", "s_tmax", "s_noise", "sigma_skip", "warm_start"):
        if name in parameters and name in ui_options:
            kwargs[name] = ui_options[name]
    return func(model_wrap, x, extra_args=extra_args, disable=False, callback=callback, **kwargs)


class KSAMPLER:
    """A stand-in for ComfyUI's ``comfy.samplers.KSAMPLER`` calling convention."""

    def __init__(self, sampler_function: Any, extra_options: dict[str, Any] | None = None) -> None:
        self.sampler_function = sampler_function
        self.extra_options = extra_options or {}

    def sample(
        self,
        model_k: Any,
        sigmas: Tensor,
        extra_args: dict[str, Any],
        callback: Any,
        noise: Tensor,
        disable_pbar: bool = True,
    ) -> Tensor:
        total_steps = len(sigmas) - 1
        k_callback = (lambda d: callback(d["i"], d["denoised"], d["x"], total_steps)) if callback else None
        return self.sampler_function(
            model_k,
            noise * sigmas[0],
            sigmas,
            extra_args=extra_args,
            callback=k_callback,
            disable=disable_pbar,
            **self.extra_options,
        )


def test_automatic1111_style_registration(tmp_path: Any) -> None:
    # docs/adapters.md#automatic1111: register a configured sampler as a callable.
    g = gaussian_of_shape((3, 4, 4), seed=7, high=1.0)
    stats = tmp_path / "latent_stats.npz"
    g.save(stats)
    teleport_euler = gk.as_k_diffusion_sampler("euler", warm_start=str(stats), sigma_skip=5.0)
    samplers_k_diffusion = [("Euler", "sample_euler", ["k_euler"], {})]
    samplers_k_diffusion.append(
        ("gaussport Euler + teleport", teleport_euler, ["gp_euler_tp"], {"scheduler": "karras"})
    )
    label, funcname, _, _ = samplers_k_diffusion[-1]
    assert callable(funcname)

    class CFGDenoiser:  # the front-end's guidance wrapper; extra_args carry cond/uncond/cond_scale
        def __call__(
            self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor, cond_scale: float
        ) -> Tensor:
            return g(x, sigma) + 0.0 * cond_scale * (cond - uncond).sum()

    steps: list[int] = []
    sigmas = ks.get_sigmas_karras(10, 0.03, 14.6)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    extra = {"cond": torch.ones(1), "uncond": torch.zeros(1), "cond_scale": 7.0}
    out = a1111_call(
        funcname, CFGDenoiser(), x, sigmas, extra, lambda d: steps.append(d["i"]), ui_options={"s_churn": 1.0}
    )
    assert steps == list(range(10))
    assert torch.equal(
        out, teleport_euler(g, x, sigmas, disable=True)
    )  # s_churn is not in our signature: not passed
    out2 = a1111_call(funcname, CFGDenoiser(), x, sigmas, extra, None, ui_options={"sigma_skip": 2.0})
    assert torch.equal(out2, teleport_euler(g, x, sigmas, sigma_skip=2.0, disable=True))

    class Interrupted(Exception):
        pass

    def interrupt(d: dict[str, Any]) -> None:  # A1111 stops a job by raising inside the callback
        if d["i"] == 6:
            raise Interrupted

    with pytest.raises(Interrupted):
        a1111_call(funcname, CFGDenoiser(), x, sigmas, extra, interrupt, ui_options={})


def test_comfyui_style_ksampler() -> None:
    # docs/adapters.md#comfyui: a node returns KSAMPLER(as_k_diffusion_sampler(...)).
    g = gaussian_of_shape((4, 2, 2), seed=8, high=1.0)
    sampler = KSAMPLER(gk.as_k_diffusion_sampler("euler", warm_start=g, sigma_skip=3.0))
    sigmas = ks.get_sigmas_karras(8, 0.03, 14.6)
    noise = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    previews: list[tuple[int, int]] = []
    model_k = lambda x, sigma, **extra: g(x, sigma)  # noqa: E731  (extra: model_options, seed, ...)
    extra_args = {"model_options": {}, "seed": 0}
    out = sampler.sample(
        model_k, sigmas, extra_args, lambda i, den, x, total: previews.append((i, total)), noise
    )
    assert previews == [(i, 8) for i in range(8)]
    exact = g.flow(noise.double() * float(sigmas[0]), float(sigmas[0]), 0.0)
    plain = KSAMPLER(gk.sample_euler).sample(model_k, sigmas, extra_args, None, noise)
    assert _rel(out, exact) < _rel(plain, exact)


def test_comfyui_flow_models_start_at_pure_noise() -> None:
    # ComfyUI CONST (SD3/Flux) models: x = (1 - sigma) x0 + sigma eps, sigma in [0, 1]; D returns x0.
    g = gaussian_of_shape((6,), seed=9, high=1.0)

    def model_k(x: Tensor, sigma: Tensor) -> Tensor:  # exact x0 for the flow convention
        t = sigma.to(torch.float64)
        if bool((t == 1).all()):  # pure noise: the posterior mean is the data mean
            return g.mean.expand_as(x).clone()
        return g(x / (1 - t[:, None]), t / (1 - t))

    sigmas = torch.linspace(1.0, 0.0, 9, dtype=torch.float64)
    noise = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[dict[str, Any]] = []
    full = gk.sample_euler(
        model_k,
        noise,
        sigmas,
        parameterization="flow",
        warm_start=g,
        sigma_skip=0.0,
        callback=seen.append,
        disable=True,
    )
    exact = g.mean + g.cov.apply(noise, lambda lam: lam.sqrt())  # the exact flow from pure noise to t = 0
    assert torch.allclose(full, exact.reshape(full.shape), rtol=1e-10, atol=1e-10)
    assert [d["i"] for d in seen] == list(range(8))
    errors = []
    for n in (8, 16, 32):
        s = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
        errors.append(_rel(gk.sample_euler(model_k, noise, s, parameterization="flow", disable=True), exact))
    assert errors[0] > errors[1] > errors[2]
    assert math.log2(errors[1] / errors[2]) > 0.7  # first order


def test_k_diffusion_models_as_gaussport_denoisers(tiny_unet: Any, diffusers_pkg: Any) -> None:
    # k-diffusion's own preconditioner around an inner model that needs a keyword argument.
    inner = lambda x, sigma, cond: x * cond + sigma[:, None]  # noqa: E731
    den = K.layers.Denoiser(inner, sigma_data=0.5)
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    cond = torch.tensor(0.3, dtype=torch.float64)
    bound = gk.KDiffusionDenoiser(den, {"cond": cond})
    assert torch.equal(bound(x, sigma), den(x, sigma, cond=cond))
    sol = gaussport.solve(bound, x * 10, [10.0, 1.0, 0.0], "heun", disable=True)
    assert sol.nfe == 3 and torch.isfinite(sol.x).all()
    # External wrappers report their training range as floats.
    wrapped, _ = _unet_denoiser(tiny_unet, diffusers_pkg)
    kd = gk.KDiffusionDenoiser(wrapped)
    assert kd.sigma_min == pytest.approx(float(wrapped.sigma_min)) and kd.sigma_max == pytest.approx(
        float(wrapped.sigma_max)
    )
    assert gk.KDiffusionDenoiser(bound).sigma_min is None


# ------------------------------------------------------------------- extra_args live (issue 11, item 7)
def _conditional_model(mixture: Any, log: list[float]) -> Any:
    """An exact nonlinear denoiser whose data are shifted by ``cond``; it logs the cond of each call."""

    def model(x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        log.append(float(cond))
        return mixture(x - cond, sigma) + cond

    return model


@pytest.mark.reference
def test_extra_args_replaced_from_a_callback_reach_the_model_as_with_k_diffusion() -> None:
    # A front-end replaces an entry of the dict it passed as extra_args while the sampler runs (here
    # from the callback, after step 3); k-diffusion passes that same dict on every call, so the model
    # sees the new value from the next call on. So must ours.
    mixture = anisotropic_mixture(dim=6, n_components=3, seed=5)
    sigmas = torch.tensor(grids.karras(8, 0.01, 20.0), dtype=torch.float64)
    x = mixture.sample(3, 20.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    base, refiner = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    runs = {}
    for label, fn in (("theirs", ks.sample_euler), ("ours", gk.sample_euler)):
        log: list[float] = []
        extra = {"cond": base}

        def switch(d: dict[str, Any], extra: dict[str, Any] = extra) -> None:
            if d["i"] == 3:
                extra["cond"] = refiner

        out = fn(
            _conditional_model(mixture, log),
            x.clone(),
            sigmas,
            extra_args=extra,
            callback=switch,
            disable=True,
        )
        runs[label] = (out, log)
    (theirs, their_log), (ours, our_log) = runs["theirs"], runs["ours"]
    assert our_log == their_log == [0.0] * 4 + [0.7] * 4
    assert _rel(ours, theirs) < 1e-10


@pytest.mark.reference
def test_automatic1111_refiner_switch_inside_the_model_as_with_k_diffusion() -> None:
    # A1111's CFG denoiser switches to the SDXL refiner inside its own forward (update_inner_model):
    # it replaces cond/uncond in the sampler's extra_args dict in place and uses them from then on.
    mixture = anisotropic_mixture(dim=6, n_components=3, seed=6)
    sigmas = torch.tensor(grids.karras(10, 0.01, 14.6), dtype=torch.float64)
    x = mixture.sample(2, 14.6, torch.Generator().manual_seed(1), dtype=torch.float64)
    refiner = {
        "cond": torch.tensor(0.5, dtype=torch.float64),
        "uncond": torch.tensor(-0.2, dtype=torch.float64),
    }

    class CFGDenoiser:
        def __init__(self, sampler_extra_args: dict[str, Any]) -> None:
            self.sampler_extra_args = sampler_extra_args
            self.switched = False
            self.log: list[tuple[float, float]] = []

        def __call__(
            self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor, cond_scale: float
        ) -> Tensor:
            if not self.switched and float(sigma[0]) < 2.0:  # refiner_switch_at
                self.switched = True
                self.sampler_extra_args.update(refiner)  # update_inner_model
                cond, uncond = self.sampler_extra_args["cond"], self.sampler_extra_args["uncond"]
            self.log.append((float(cond), float(uncond)))
            shift = uncond + cond_scale * (cond - uncond)
            return mixture(x - shift, sigma) + shift

    results = {}
    for label, fn in (("theirs", ks.sample_heun), ("ours", gk.sample_heun)):
        extra = {
            "cond": torch.tensor(0.1, dtype=torch.float64),
            "uncond": torch.tensor(0.0, dtype=torch.float64),
        }
        extra["cond_scale"] = 1.5
        model = CFGDenoiser(extra)
        results[label] = (fn(model, x.clone(), sigmas, extra_args=extra, disable=True), model.log)
    (theirs, their_log), (ours, our_log) = results["theirs"], results["ours"]
    assert our_log == their_log and their_log[-1] == (0.5, -0.2) and their_log[0] == (0.1, 0.0)
    assert _rel(ours, theirs) < 1e-10


def test_k_diffusion_denoiser_reads_the_callers_mapping_at_every_call() -> None:
    extra = {"cond": 1.0}
    den = gk.KDiffusionDenoiser(lambda x, sigma, cond: x * cond, extra)
    x = torch.ones(2, 3)
    assert torch.equal(den(x, torch.ones(2)), x)
    extra["cond"] = 2.0
    assert torch.equal(den(x, torch.ones(2)), 2 * x)
    assert den.extra_args is extra


# ------------------------------------------ increasing grids and repeated levels (issue 11, item 8)
def comfyui_flip_sigmas(sigmas: Tensor) -> Tensor:
    """ComfyUI's FlipSigmas node (unsampling): the grid reversed, a leading 0 replaced by 1e-4."""
    flipped = sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = 1e-4
    return flipped


def comfyui_simple_scheduler(model_sigmas: Tensor, steps: int) -> Tensor:
    """ComfyUI's "simple" scheduler: every (len / steps)-th of the model's discrete levels, from the top,
    then 0. Above len(model_sigmas) steps, levels repeat."""
    stride = len(model_sigmas) / steps
    levels = [float(model_sigmas[-(1 + int(k * stride))]) for k in range(steps)]
    return torch.tensor(levels + [0.0], dtype=model_sigmas.dtype)


def _counted(fn: Any, calls: list[float]) -> Any:
    def model(x: Tensor, sigma: Tensor, **extra: Any) -> Tensor:
        calls.append(float(sigma[0]))
        return fn(x, sigma, **extra)

    return model


def _compare_callbacks(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tol: float) -> None:
    assert [d["i"] for d in ours] == [d["i"] for d in theirs] == list(range(len(theirs)))
    for mine, ref in zip(ours, theirs, strict=True):
        assert float(mine["sigma"]) == float(ref["sigma"]) == float(mine["sigma_hat"])
        assert _rel(mine["x"], ref["x"]) < tol and _rel(mine["denoised"], ref["denoised"]) < tol


@pytest.mark.reference
@pytest.mark.parametrize("name", SHARED)
def test_comfyui_unsampling_flipped_sigmas_matches_k_diffusion(name: str) -> None:
    # ComfyUI's FlipSigmas + SamplerCustom run k-diffusion's samplers upwards (data to noise).
    mixture = anisotropic_mixture(dim=8, n_components=3, seed=2)
    up = comfyui_flip_sigmas(torch.tensor(grids.karras(9, 0.03, 14.6), dtype=torch.float64))
    latent = mixture.sample(3, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs_cb: list[dict[str, Any]] = []
    ours_cb: list[dict[str, Any]] = []
    theirs = getattr(ks, f"sample_{name}")(
        mixture, latent.clone(), up, callback=theirs_cb.append, disable=True
    )
    ours = getattr(gk, f"sample_{name}")(mixture, latent.clone(), up, callback=ours_cb.append, disable=True)
    assert _rel(ours, theirs) < 1e-10
    _compare_callbacks(ours_cb, theirs_cb, 1e-10)


@pytest.mark.reference
def test_unsampling_a_unet_matches_k_diffusion(tiny_unet: Any, diffusers_pkg: Any) -> None:
    model, _ = _unet_denoiser(tiny_unet, diffusers_pkg)
    up = comfyui_flip_sigmas(ks.get_sigmas_karras(6, float(model.sigma_min), float(model.sigma_max)))
    latent = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    for name in ("euler", "heun"):
        theirs = getattr(ks, f"sample_{name}")(model, latent.clone(), up, disable=True)
        ours = getattr(gk, f"sample_{name}")(model, latent.clone(), up, disable=True)
        assert ours.dtype == theirs.dtype and _rel(ours, theirs) < 2e-5, name


@pytest.mark.reference
@pytest.mark.parametrize(
    ("name", "levels"),
    [
        ("euler", [14.6, 9.0, 9.0, 4.0, 2.0, 2.0, 2.0, 1.0, 0.3, 0.0]),
        ("heun", [14.6, 14.6, 9.0, 4.0, 4.0, 1.0, 0.3, 0.0]),  # repeats at the end: the test below
        ("euler", [0.05, 0.05, 0.3, 1.0, 1.0, 4.0, 14.6]),  # unsampling a hand-made list
    ],
    ids=["euler-down", "heun-down", "euler-up"],
)
def test_repeated_levels_match_k_diffusion_at_no_cost(name: str, levels: list[float]) -> None:
    # Zero-length intervals: k-diffusion evaluates the model and does not move; we do not evaluate.
    # Their callbacks still come, with D at that state and level (the value k-diffusion reports).
    mixture = anisotropic_mixture(dim=8, n_components=3, seed=3)
    sigmas = torch.tensor(levels, dtype=torch.float64)
    x = mixture.sample(3, levels[0], torch.Generator().manual_seed(2), dtype=torch.float64)
    their_calls: list[float] = []
    our_calls: list[float] = []
    theirs_cb: list[dict[str, Any]] = []
    ours_cb: list[dict[str, Any]] = []
    theirs = getattr(ks, f"sample_{name}")(
        _counted(mixture, their_calls), x.clone(), sigmas, callback=theirs_cb.append, disable=True
    )
    ours = getattr(gk, f"sample_{name}")(
        _counted(mixture, our_calls), x.clone(), sigmas, callback=ours_cb.append, disable=True
    )
    assert _rel(ours, theirs) < 1e-10
    _compare_callbacks(ours_cb, theirs_cb, 1e-10)
    distinct, _ = grids.merge_repeats(levels)
    assert len(our_calls) == gaussport.solvers.get(name).evaluations(distinct) < len(their_calls)


@pytest.mark.reference
def test_repeated_levels_in_a_multistep_solver_are_skipped() -> None:
    # k-diffusion's 2M divides by the zero step of a repeated level in the next step (NaN); ours runs
    # the distinct levels, with the multistep history of those, and reports every interval.
    mixture = anisotropic_mixture(dim=8, n_components=3, seed=3)
    levels = [14.6, 9.0, 4.0, 4.0, 2.0, 1.0, 0.3, 0.0]
    x = mixture.sample(3, levels[0], torch.Generator().manual_seed(2), dtype=torch.float64)
    theirs = ks.sample_dpmpp_2m(mixture, x.clone(), torch.tensor(levels, dtype=torch.float64), disable=True)
    assert not torch.isfinite(theirs).all()
    seen: list[dict[str, Any]] = []
    ours = gk.sample_dpmpp_2m(mixture, x, torch.tensor(levels, dtype=torch.float64), callback=seen.append)
    merged = gk.sample_dpmpp_2m(mixture, x, torch.tensor(grids.merge_repeats(levels)[0], dtype=torch.float64))
    assert torch.equal(ours, merged) and [d["i"] for d in seen] == list(range(len(levels) - 1))
    assert torch.equal(seen[2]["x"], seen[3]["x"]) and torch.equal(seen[2]["denoised"], seen[3]["denoised"])


@pytest.mark.reference
def test_comfyui_simple_scheduler_above_1000_steps_matches_k_diffusion() -> None:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    model_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # ascending, as ComfyUI stores them
    sigmas = comfyui_simple_scheduler(model_sigmas, 1100)
    assert len(set(sigmas.tolist())) < len(sigmas)  # the schedule repeats levels
    g = gaussian_of_shape((6,), seed=4, high=1.0)
    x = g.sample(2, float(sigmas[0]), torch.Generator().manual_seed(0), dtype=torch.float64)
    their_calls: list[float] = []
    our_calls: list[float] = []
    theirs = ks.sample_euler(_counted(g, their_calls), x.clone(), sigmas, disable=True)
    steps: list[int] = []
    ours = gk.sample_euler(_counted(g, our_calls), x.clone(), sigmas, callback=lambda d: steps.append(d["i"]))
    assert _rel(ours, theirs) < 1e-10
    assert steps == list(range(1100)) and len(their_calls) == 1100
    assert len(our_calls) == len(grids.merge_repeats(sigmas)[0]) - 1 < 1100


def test_zero_length_intervals_at_the_end_report_the_newest_denoised_value() -> None:
    g = gaussian_of_shape((4,), seed=1)
    x = g.sample(2, 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[dict[str, Any]] = []
    calls: list[float] = []
    out = gk.sample_heun(_counted(g, calls), x, [10.0, 5.0, 5.0, 5.0], callback=seen.append, disable=True)
    assert len(calls) == 2 and [d["i"] for d in seen] == [0, 1, 2]
    assert torch.equal(seen[1]["x"], out) and torch.equal(seen[2]["x"], out)
    assert torch.equal(seen[1]["denoised"], seen[0]["denoised"])  # no evaluation at 5: the newest value
    assert [float(d["sigma"]) for d in seen] == [10.0, 5.0, 5.0]
    # A pass of repeated levels only: nothing moves, nothing is evaluated; denoised is the state.
    seen.clear()
    assert torch.equal(gk.sample_euler(_counted(g, calls), x, [3.0, 3.0], callback=seen.append), x)
    assert len(calls) == 2 and len(seen) == 1 and torch.equal(seen[0]["denoised"], x)


def test_unsampling_with_the_reverse_teleport() -> None:
    from gaussport.inversion import invert

    # A teleport sampler run upwards: the solver up to sigma_skip, the Gaussian's exact flow above it.
    g = gaussian_of_shape((5,), seed=2, high=1.0)
    up = torch.tensor(grids.karras(10, 0.01, 40.0, append_zero=False)[::-1], dtype=torch.float64)
    x0 = g.sample(3, 0.01, torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = gk.as_k_diffusion_sampler("heun", warm_start=g, sigma_skip=2.0)
    calls: list[float] = []
    seen: list[dict[str, Any]] = []
    out = sampler(_counted(g, calls), x0, up, callback=seen.append, disable=True)
    assert calls and max(calls) <= 2.0 and [d["i"] for d in seen] == list(range(len(up) - 1))
    expected = invert(g, x0, up, "heun", warm_start=g, sigma_skip=2.0, disable=True).x
    assert torch.equal(out, expected)
    # Down again with the same sampler: the teleport undoes itself; only the solver's error remains.
    back = sampler(g, out, up.flip(0), disable=True)
    plain = gk.sample_heun(g, gk.sample_heun(g, x0, up, disable=True), up.flip(0), disable=True)
    assert _rel(back, x0) < _rel(plain, x0)
    # A pass lying entirely above sigma_skip is teleported (0 evaluations).
    calls.clear()
    high = up[up >= 3.0]
    assert torch.equal(sampler(_counted(g, calls), x0, high, disable=True), g.flow(x0, float(high[0]), 40.0))
    assert not calls


def test_increasing_grid_errors() -> None:
    g = gaussian_of_shape((4,), seed=1)
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"cannot start at sigma = 0.*1e-4"):
        gk.sample_euler(g, x, torch.tensor([0.0, 0.5, 2.0]), disable=True)  # flipped, 0 not replaced
    with pytest.raises(ValueError, match="parameterization='ve' only"):
        gk.sample_euler(g, x, torch.tensor([0.1, 0.5, 0.9]), parameterization="flow", disable=True)
    with pytest.raises(ValueError, match="strictly decreasing"):
        gk.sample_euler(g, x, torch.tensor([2.0, 0.5, 1.0]), disable=True)
    with pytest.raises(ValueError, match="'dpm_solver_v3' cannot integrate an increasing grid"):
        gk.sample_dpm_solver_v3(g, x, torch.tensor([0.1, 0.5, 2.0]), disable=True)
