"""The pieces of benchmarks/training_gmm.py: target, preconditioning, metric, and a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "training_gmm_bench", ROOT / "benchmarks" / "training_gmm.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _bench()


def test_target_has_means_at_radius_three_and_the_stated_spectra() -> None:
    mixture = bench.mixture_target(32, seed=0)
    assert len(mixture) == 8 and mixture.dim == 32
    for c in mixture.components:
        assert float(c.mean.norm()) == pytest.approx(3.0, rel=1e-12)
        lam = c.cov.eigenvalues
        assert float(lam.max()) == pytest.approx(0.25, rel=1e-9)
        assert float(lam.min()) == pytest.approx(0.0025, rel=1e-9)
    w = mixture.weights
    assert float(w.sum()) == pytest.approx(1.0) and float(w.max() / w.min()) > 1.2


def test_zero_initialised_network_gives_edm_skip_only() -> None:
    # F = 0 at initialisation, so D = c_skip x = sd^2 / (sigma^2 + sd^2) x.
    torch.manual_seed(0)
    model = bench.EDMPreconditioned(bench.FourierMLP(5), sigma_data=0.7)
    x = torch.randn(4, 5)
    sigma = torch.tensor([0.1, 1.0, 3.0, 40.0])
    expected = 0.49 / (sigma**2 + 0.49)
    torch.testing.assert_close(model(x, sigma), expected[:, None] * x)
    # EDM's weight: (sigma^2 + sd^2) / (sigma sd)^2
    torch.testing.assert_close(model.loss_weight(sigma), (sigma**2 + 0.49) / (sigma * 0.7) ** 2)


def test_metric_is_zero_for_the_exact_denoiser_and_one_for_the_identity() -> None:
    mixture = bench.mixture_target(6, n_components=3, seed=1)
    ev = bench.eval_set(mixture, [0.1, 1.0, 10.0], 256)
    exact = bench.errors(mixture, ev, torch.float64)
    assert exact["relative"] == [0.0, 0.0, 0.0] and exact["score"] == [0.0, 0.0, 0.0]
    # D = x: E|x - D*|^2 / E|D* - x|^2 = 1 exactly; the score error is that numerator / sigma^4.
    identity = bench.errors(lambda x, s: x, ev, torch.float64)
    assert identity["relative"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-12)
    for s, x, d, value in zip(ev.sigmas, ev.x, ev.exact, identity["score"], strict=True):
        assert value == pytest.approx(float(((x - d) ** 2).sum(1).mean()) / s**4, rel=1e-12)


def test_log_average_is_the_mean_over_log_sigma() -> None:
    sigmas = [0.1, 1.0, 10.0, 100.0]
    assert bench.log_average([2.0] * 4, sigmas) == pytest.approx(2.0)
    # linear in log10 sigma from 0 to 3: mean 1.5; restricted to sigma > 0.5: from 1 to 3, mean 2
    values = [math.log10(s) + 1 for s in sigmas]
    assert bench.log_average(values, sigmas) == pytest.approx(1.5)
    assert bench.log_average(values, sigmas, above=0.5) == pytest.approx(2.0)


@pytest.mark.slow
def test_tiny_run_of_every_arm_writes_finite_results(tmp_path: Path) -> None:
    argv = ["--seeds", "0", "--n", "64", "--steps", "4", "--batch", "32", "--levels", "6"]
    argv += ["--eval-samples", "64", "--dim", "8", "--results", str(tmp_path), "--img", str(tmp_path)]
    assert bench.main(argv + ["--tag", "quick"]) == 0
    result = json.loads((tmp_path / "training_gmm_quick.json").read_text())
    assert [c["regime"] for c in result["configs"]] == ["fresh", "fixed"]
    per_seed = result["configs"][0]["seeds"]["0"]
    for arm in bench.ARMS:
        assert len(per_seed[arm]["relative"]) == 6
        assert all(math.isfinite(v) for v in per_seed[arm]["relative"])
    assert (tmp_path / "training-gmm-quick.png").stat().st_size > 0
