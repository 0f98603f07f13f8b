"""Every deprecated public name still works for one release, and warns naming its replacement."""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Gaussian
from gaussport.ems import EMS, analytic_ems
from gaussport.testing import random_gaussian


@pytest.fixture
def problem() -> dict:
    g = random_gaussian([1.0, 0.3, 0.05], seed=0)
    sig = grids.karras(6, 0.01, 20.0)
    x = g.sample(2, 20.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"g": g, "sig": sig, "x": x}


def test_sample_schedule_is_teleport(problem: dict) -> None:
    g, sig, x = problem["g"], problem["sig"], problem["x"]
    new = gaussport.sample(g, x, sig, "heun", warm_start=g, sigma_skip=5.0, teleport="respace", disable=True)
    with pytest.warns(DeprecationWarning, match=r"sample\(schedule=\.\.\.\).*sample\(teleport=\.\.\.\)"):
        old = gaussport.sample(
            g, x, sig, "heun", warm_start=g, sigma_skip=5.0, schedule="respace", disable=True
        )
    assert torch.equal(new.x, old.x) and new.sigmas == old.sigmas
    with pytest.raises(TypeError, match="both schedule= and teleport="):
        gaussport.sample(g, x, sig, warm_start=g, sigma_skip=5.0, schedule="respace", teleport="respace")


def test_sample_without_warm_start_is_solve(problem: dict) -> None:
    g, sig, x = problem["g"], problem["sig"], problem["x"]
    with pytest.warns(DeprecationWarning, match=r"warm_start=None.*gaussport.solve"):
        old = gaussport.sample(g, x, sig, "euler", disable=True)
    assert torch.equal(old.x, gaussport.solve(g, x, sig, "euler", disable=True).x)


def test_warm_start_record_is_teleport() -> None:
    with pytest.warns(DeprecationWarning, match=r"solvers.WarmStart.*solvers.Teleport"):
        from gaussport.solvers import WarmStart
    assert WarmStart is gaussport.solvers.Teleport


def test_ems_analytic_is_analytic_ems() -> None:
    g = Gaussian.diagonal(torch.zeros(3), torch.tensor([1.0, 0.2, 0.01]))
    with pytest.warns(DeprecationWarning, match=r"EMS.analytic.*analytic_ems"):
        old = EMS.analytic(g, sigma_min=0.01, sigma_max=10.0, intervals=8)
    new = analytic_ems(g, sigma_min=0.01, sigma_max=10.0, intervals=8)
    assert torch.equal(old.l, new.l) and torch.equal(old.s, new.s) and torch.equal(old.b, new.b)


def test_k_diffusion_samplers_dict_and_schedule_option() -> None:
    from gaussport.adapters import k_diffusion as gk

    with pytest.warns(DeprecationWarning, match=r"samplers\(\).*as_k_diffusion_sampler"):
        table = gk.samplers()
    assert set(table) == {f"sample_{n}" for n in gaussport.solvers.available()}
    g = random_gaussian([1.0, 0.2], seed=1)
    x = g.sample(2, 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = torch.tensor(grids.karras(5, 0.01, 10.0), dtype=torch.float64)
    new = gk.sample_euler(g, x, sig, disable=True, warm_start=g, sigma_skip=2.0, teleport="respace")
    with pytest.warns(DeprecationWarning, match=r"sample_euler\(schedule=\.\.\.\)"):
        old = gk.sample_euler(g, x, sig, disable=True, warm_start=g, sigma_skip=2.0, schedule="respace")
    assert torch.equal(new, old)


def test_edm_sample_schedule_option() -> None:
    from gaussport.adapters.edm import edm_sample

    g = random_gaussian([1.0, 0.2, 0.1, 0.05], seed=2)

    class Net(torch.nn.Module):
        sigma_min, sigma_max = 0.002, 80.0

        def round_sigma(self, sigma: object) -> torch.Tensor:
            return torch.as_tensor(sigma)

        def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: object = None) -> torch.Tensor:
            return g(x.flatten(1).double(), sigma.double().flatten()).reshape(x.shape).to(x.dtype)

    z = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    warm = Gaussian(g.mean.reshape(1, 2, 2), g.cov)
    new = edm_sample(Net(), z, num_steps=6, warm_start=warm, sigma_skip=5.0, teleport="respace", disable=True)
    with pytest.warns(DeprecationWarning, match=r"edm_sample\(schedule=\.\.\.\)"):
        old = edm_sample(
            Net(), z, num_steps=6, warm_start=warm, sigma_skip=5.0, schedule="respace", disable=True
        )
    assert torch.equal(new.x, old.x)


# ---------------------------------------------------------------------------------------------------------
# gaussport.adapters.flow: ve_sigma / flow_time -> gaussport.schedules.RectifiedFlow().sigma_at / .t_at
# (the schedules are the one place that converts).


def test_flow_ve_sigma_and_flow_time_are_rectified_flow_conversions() -> None:
    import math

    from gaussport import schedules
    from gaussport.adapters import flow

    rf = schedules.RectifiedFlow()
    with pytest.warns(DeprecationWarning, match=r"flow\.ve_sigma.*RectifiedFlow\(\)\.sigma_at"):
        ve_sigma = flow.ve_sigma
    with pytest.warns(DeprecationWarning, match=r"flow\.flow_time.*RectifiedFlow\(\)\.t_at"):
        flow_time = flow.flow_time
    for t in (0.0, 0.3, 0.5, 0.999, 1.0):
        assert ve_sigma(t) == rf.sigma_at(t) and flow_time(rf.sigma_at(t)) == rf.t_at(rf.sigma_at(t))
    assert ve_sigma(0.5) == 1.0 and ve_sigma(1.0) == math.inf and flow_time(math.inf) == 1.0
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        ve_sigma(1.5)


# ---------------------------------------------------------------------------------------------------------
# The digits application moved out of the library: gaussport.models -> gaussport.digits,
# metrics.digits_* -> gaussport.digits.digits_*, Evaluator.digits -> gaussport.digits.evaluator.


def test_models_names_are_the_digits_names() -> None:
    import gaussport.digits
    import gaussport.models

    names = ("DigitsUNet", "DigitsClassifier", "DigitsTestSet", "load_digits_denoiser", "pixels_to_model")
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"gaussport\.models\.{name}.*gaussport\.digits\.{name}"):
            old = getattr(gaussport.models, name)
        assert old is getattr(gaussport.digits, name)
    with pytest.raises(AttributeError):
        gaussport.models.no_such_name  # noqa: B018


def test_models_submodules_are_the_digits_submodules() -> None:
    from gaussport.digits import files, release, train
    from gaussport.models import digits as old_files
    from gaussport.models import release as old_release
    from gaussport.models import train as old_train

    for old, new, name in (
        (old_files, files, "load_digits_test_set"),
        (old_files, files, "data_path"),
        (old_train, train, "train_digits"),
        (old_release, release, "train_demo_model"),
    ):
        with pytest.warns(DeprecationWarning, match=rf"{new.__name__}\.{name}"):
            assert getattr(old, name) is getattr(new, name)


def test_metrics_digits_functions_are_in_gaussport_digits() -> None:
    import gaussport.digits
    from gaussport import metrics

    for name in ("digits_features", "digits_frechet_distance"):
        with pytest.warns(DeprecationWarning, match=rf"metrics\.{name}.*gaussport\.digits\.{name}"):
            assert getattr(metrics, name) is getattr(gaussport.digits, name)


def test_frechet_over_seeds_without_a_metric_is_the_digits_metric() -> None:
    from gaussport.digits import digits_frechet_distance
    from gaussport.metrics import frechet_over_seeds

    def generate(gen: torch.Generator) -> torch.Tensor:
        return torch.rand(20, 1, 8, 8, generator=gen) * 2 - 1

    new = frechet_over_seeds(generate, [0, 1], metric=digits_frechet_distance)
    with pytest.warns(DeprecationWarning, match=r"frechet_over_seeds\(\) without metric="):
        old = frechet_over_seeds(generate, [0, 1])
    assert old == new


def test_evaluator_digits_is_gaussport_digits_evaluator() -> None:
    import gaussport.digits
    from gaussport.evaluation import Evaluator

    with pytest.warns(DeprecationWarning, match=r"Evaluator\.digits.*gaussport\.digits\.evaluator"):
        old = Evaluator.digits(seeds=range(2), reference_steps=2, frechet_metric=None)
    new = gaussport.digits.evaluator(seeds=range(2), reference_steps=2, frechet_metric=None)
    # Same model (the fingerprint hashes every weight), seeds and settings: the same harness.
    assert (old.shape, old.seeds, old.fingerprint) == (new.shape, new.seeds, new.fingerprint)
    assert (old.reference_steps, old.sigma_min, old.sigma_max) == (
        new.reference_steps,
        new.sigma_min,
        new.sigma_max,
    )


# ----------------------------------------------------------------------------- grids
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Karras", "KarrasFamily"),
        ("Exponential", "ExponentialFamily"),
        ("PolyExponential", "PolyExponentialFamily"),
    ],
)
def test_grid_family_classes_say_they_are_families(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"grids\.{old} is deprecated.*grids\.{new}"):
        cls = getattr(grids, old)
    assert cls is getattr(grids, new)


def test_logsnr_uniform_is_exponential() -> None:
    with pytest.warns(DeprecationWarning, match=r"grids\.logsnr_uniform.*grids\.exponential"):
        old = grids.logsnr_uniform
    assert old(5, 0.01, 10.0) == grids.exponential(5, 0.01, 10.0)


# ----------------------------------------------------------------------------- solver options
def test_ipndm_solver_order_is_adams_bashforth(problem: dict) -> None:
    g, sig, x = problem["g"], problem["sig"], problem["x"]
    with pytest.warns(DeprecationWarning, match=r"option solver_order= of solver 'ipndm'.*adams_bashforth="):
        old = gaussport.solvers.get("ipndm", solver_order=3)
    assert old == gaussport.solvers.get("ipndm", adams_bashforth=3)
    with pytest.warns(DeprecationWarning, match=r"IPNDM\.solver_order.*IPNDM\.adams_bashforth"):
        assert old.solver_order == 3
    with pytest.warns(DeprecationWarning):
        ran = gaussport.solve(g, x, sig, "ipndm_v", solver_order=2, disable=True)
    assert torch.equal(ran.x, gaussport.solve(g, x, sig, "ipndm_v", adams_bashforth=2, disable=True).x)
    with pytest.raises(TypeError, match="both solver_order= and adams_bashforth="):
        gaussport.solvers.get("ipndm", solver_order=3, adams_bashforth=3)
