"""Classifier-free guidance as a denoiser; class-conditional (per-class Gaussian) teleport."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.adapters._teleport import from_noise
from gaussport.adapters.guidance import ClassConditionalGaussian, ClassifierFreeGuidance
from gaussport.analytic import Gaussian, anisotropic_mixture


class Recorder:
    """``model(x, sigma, c) = x * (1 + c) + sigma`` per row (c a tensor or float); records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: Tensor, sigma: Tensor, c: Any, mode: str = "a") -> Tensor:
        self.batches.append(x.shape[0])
        c = torch.as_tensor(c, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x * (1 + c) + sigma.reshape(-1, *([1] * (x.ndim - 1))) + (0.0 if mode == "a" else 1.0)


def test_cfg_formula_batched_and_unbatched() -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    cond, uncond = torch.tensor([2.0, 3.0, 4.0]), torch.zeros(3)
    rec = Recorder()
    batched = ClassifierFreeGuidance(rec, 7.5, {"c": cond}, {"c": uncond})(x, sigma)
    assert rec.batches == [6]
    unbatched = ClassifierFreeGuidance(rec, 7.5, {"c": cond}, {"c": uncond}, batched=False)(x, sigma)
    d_c, d_u = rec(x, sigma, cond), rec(x, sigma, uncond)
    assert torch.allclose(batched, d_u + 7.5 * (d_c - d_u)) and torch.allclose(unbatched, batched)
    rec.batches.clear()
    assert torch.equal(
        ClassifierFreeGuidance(rec, 1.0, {"c": cond}, {"c": uncond})(x, sigma), rec(x, sigma, cond)
    )
    assert torch.equal(
        ClassifierFreeGuidance(rec, 0.0, {"c": cond}, {"c": uncond})(x, sigma), rec(x, sigma, uncond)
    )
    # extra keyword arguments per call (k-diffusion extra_args) reach both branches
    out = ClassifierFreeGuidance(rec, 2.0, {"c": cond}, {"c": uncond})(x, sigma, mode="b")
    assert torch.allclose(out, ClassifierFreeGuidance(rec, 2.0, {"c": cond}, {"c": uncond})(x, sigma) + 1.0)


def test_cfg_bad_input() -> None:
    with pytest.raises(ValueError, match="same keys"):
        ClassifierFreeGuidance(Recorder(), 3.0, {"c": 1.0}, {})
    with pytest.raises(ValueError, match="batched=False"):
        ClassifierFreeGuidance(Recorder(), 3.0, {"c": 1.0}, {"c": 0.0})(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(TypeError, match="callable"):
        ClassifierFreeGuidance(None, 3.0)  # type: ignore[arg-type]


def test_cfg_runs_inside_every_solver_unchanged() -> None:
    # Two exact Gaussian "conditions": guidance of affine denoisers is affine, so solvers see one denoiser.
    g_c, g_u = anisotropic_mixture(dim=5, n_components=2, seed=3).components

    def model(x: Tensor, sigma: Tensor, which: Tensor) -> Tensor:
        out = torch.empty_like(x)
        out[which == 1] = g_c(x[which == 1], sigma[which == 1])
        out[which == 0] = g_u(x[which == 0], sigma[which == 0])
        return out

    cfg = ClassifierFreeGuidance(
        model, 3.0, {"which": torch.ones(2, dtype=torch.long)}, {"which": torch.zeros(2, dtype=torch.long)}
    )
    x = torch.randn(2, 5, dtype=torch.float64) * 10
    sig = grids.karras(6, 0.05, 10.0)
    for name in gaussport.solvers.available():
        out = gaussport.solve(cfg, x, sig, name, disable=True).x
        manual = gaussport.solve(
            lambda x, s: g_u(x, s) + 3.0 * (g_c(x, s) - g_u(x, s)), x, sig, name, disable=True
        ).x
        assert torch.allclose(out, manual, rtol=1e-12, atol=1e-12)


@pytest.fixture()
def classes() -> ClassConditionalGaussian:
    return ClassConditionalGaussian.from_mixture(anisotropic_mixture(dim=4, n_components=3, seed=1))


def test_per_class_rows_follow_their_own_gaussian(classes: ClassConditionalGaussian) -> None:
    labels = torch.tensor([2, 0, 2, 1, 0])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    for lab in (labels, one_hot, labels.double()):
        per = classes.select(lab)
        flowed = per.flow(x, 5.0, 0.3)
        denoised = per(x, sigma)
        noise = from_noise(per, x, 0.7)
        for b, k in enumerate(labels.tolist()):
            g = classes.gaussians[k]
            assert torch.allclose(flowed[b], g.flow(x[b : b + 1], 5.0, 0.3)[0])
            assert torch.allclose(denoised[b], g(x[b : b + 1], sigma[b : b + 1])[0])
            assert torch.allclose(noise[b], from_noise(g, x[b : b + 1], 0.7)[0])


def test_fit_per_class(classes: ClassConditionalGaussian) -> None:
    data = torch.randn(60, 3, dtype=torch.float64)
    labels = torch.arange(60) % 3
    fitted = ClassConditionalGaussian.fit(data, labels, label_key="y")
    assert fitted.num_classes == 3 and fitted.label_key == "y"
    for k in range(3):
        assert torch.allclose(fitted.gaussians[k].mean, data[labels == k].mean(0))
        assert torch.allclose(fitted.gaussians[k].cov.dense(), torch.cov(data[labels == k].T), atol=1e-12)


def test_class_labels_bad_input(classes: ClassConditionalGaussian) -> None:
    x = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs the class labels"):
        classes.select(None)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        classes.select(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="columns"):
        classes.select(torch.ones(2, 5))
    with pytest.raises(ValueError, match="one label per sample"):
        classes.select(torch.tensor([0, 1, 2])).flow(x, 2.0, 1.0)
    with pytest.raises(ValueError, match="fitted to samples of shape"):
        classes.select(torch.tensor([0, 1])).flow(torch.zeros(2, 5, dtype=torch.float64), 2.0, 1.0)
    with pytest.raises(ValueError, match="sample shape"):
        ClassConditionalGaussian(
            [Gaussian(torch.zeros(2), torch.eye(2)), Gaussian(torch.zeros(3), torch.eye(3))]
        )
