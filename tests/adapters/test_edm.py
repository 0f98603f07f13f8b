"""EDM adapter: EDMPrecond-interface nets (our TinyEDMNet), round_sigma on the whole grid, class labels."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import TinyEDMNet

from gaussport import grids
from gaussport.adapters.edm import EDMDenoiser, edm_sample
from gaussport.adapters.guidance import ClassConditionalGaussian
from gaussport.testing import gaussian_of_shape

SHAPE = (2, 4, 4)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_sigma_range_defaults_and_clamping() -> None:
    edm = EDMDenoiser(TinyEDMNet())  # EDMPrecond says 0 / inf
    assert (edm.sigma_min, edm.sigma_max) == (0.002, 80.0)
    ve = EDMDenoiser(TinyEDMNet(sigma_min=0.02, sigma_max=100.0))
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
    grid = ve.grid(18)
    assert grid[0] == 80.0 and grid[-2] == pytest.approx(0.02) and grid[-1] == 0.0 and len(grid) == 19

    class EDM2Like(torch.nn.Module):  # no sigma_min / sigma_max / round_sigma attributes
        def forward(
            self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None
        ) -> torch.Tensor:
            return x

    edm2 = EDMDenoiser(EDM2Like())
    assert (edm2.sigma_min, edm2.sigma_max) == (0.002, 80.0)
    assert edm2.round_sigma([3.0, 1.0, 0.0]) == (3.0, 1.0, 0.0)


def test_edm_heun_costs_2n_minus_1_and_matches_k_diffusion_heun() -> None:
    ks = pytest.importorskip("k_diffusion.sampling")
    net = TinyEDMNet(label_dim=3)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 3).float()
    latents = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    sol = edm_sample(net, latents, labels, num_steps=18, disable=True)
    assert sol.nfe == 35 and sol.x.dtype == torch.float64  # EDM's loop runs in float64
    sigmas = torch.tensor(sol.sigmas, dtype=torch.float64)
    theirs = ks.sample_heun(
        net, latents.double() * sigmas[0], sigmas, extra_args={"class_labels": labels}, disable=True
    )
    assert _rel(sol.x, theirs) < 1e-6  # the net computes in float32 either way


def test_round_sigma_is_applied_to_the_whole_grid_and_the_teleport_level() -> None:
    table = torch.exp(
        torch.linspace(torch.log(torch.tensor(0.002)), torch.log(torch.tensor(80.0)), 40)
    ).double()
    net = TinyEDMNet(levels=table)
    latents = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    sol = edm_sample(net, latents, num_steps=12, disable=True)
    allowed = set(table.float().tolist())
    assert net.seen and set(net.seen) <= allowed  # the net is only ever called at its own levels
    assert set(sol.sigmas[:-1]) <= set(table.tolist()) and sol.sigmas[-1] == 0.0
    # A fine grid maps several Karras levels onto one table level: they are merged, never repeated.
    fine = EDMDenoiser(net).grid(120)
    assert len(fine) < 121 and all(b < a for a, b in zip(fine, fine[1:], strict=False))
    # The teleport level is rounded too.
    g = gaussian_of_shape(SHAPE, seed=0, high=0.3)
    net.seen.clear()
    tele = edm_sample(net, latents, num_steps=12, warm_start=g, sigma_skip=5.0, disable=True)
    assert set(net.seen) <= allowed and tele.sigmas[0] in set(table.tolist())
    assert tele.teleport is not None and tele.teleport[1] == tele.sigmas[0]


def test_teleport_on_a_gaussian_exact_net() -> None:
    g = gaussian_of_shape(SHAPE, seed=3, high=0.5)
    net = TinyEDMNet(gaussians=[g])
    latents = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = EDMDenoiser(net).grid(18)
    exact = g.flow(latents * grid[0], grid[0], 0.0)
    plain = edm_sample(net, latents, num_steps=18, disable=True)
    tele = edm_sample(net, latents, num_steps=18, warm_start=g, sigma_skip=2.0, disable=True)
    assert tele.nfe < plain.nfe and _rel(tele.x, exact) < _rel(plain.x, exact)
    to_min = edm_sample(net, latents, num_steps=18, warm_start=g, sigma_skip=grid[-2], disable=True)
    assert to_min.nfe == 1  # teleport to sigma_min, then EDM's final step x = D(x, sigma_min)
    assert _rel(to_min.x, exact) < 1e-3


def test_class_conditional_teleport_uses_the_nets_labels() -> None:
    gs = [gaussian_of_shape(SHAPE, seed=s, high=0.5, mean_scale=1.0) for s in (10, 11, 12)]
    net = TinyEDMNet(label_dim=3, gaussians=gs)
    per_class = ClassConditionalGaussian(gs)
    idx = torch.tensor([2, 0, 1, 2])
    latents = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = EDMDenoiser(net).grid(10)
    sol = edm_sample(net, latents, idx, num_steps=10, warm_start=per_class, sigma_skip=grid[-2], disable=True)
    for b, k in enumerate(idx.tolist()):
        at_min = gs[k].flow(latents[b : b + 1] * grid[0], grid[0], grid[-2])
        expected = gs[k](at_min, torch.tensor([grid[-2]], dtype=torch.float64))
        assert torch.allclose(sol.x[b : b + 1], expected, rtol=1e-5, atol=1e-5)  # the net is float32
    with pytest.raises(ValueError, match="class labels"):
        edm_sample(net, latents, None, num_steps=10, warm_start=per_class, sigma_skip=1.0, disable=True)
    with pytest.raises(ValueError, match="class-conditional"):
        edm_sample(net, latents, None, num_steps=10, disable=True)
    with pytest.raises(ValueError, match="one-hot"):
        EDMDenoiser(net, torch.ones(4, 5))


def test_bad_input() -> None:
    net = TinyEDMNet()
    latents = torch.randn(2, *SHAPE)
    with pytest.raises(ValueError, match="without warm_start"):
        edm_sample(net, latents, sigma_skip=3.0, disable=True)
    with pytest.raises(ValueError, match="fitted to samples of shape"):
        edm_sample(net, latents, warm_start=gaussian_of_shape((3, 4, 4)), sigma_skip=3.0, disable=True)
    with pytest.raises(ValueError, match="strictly decreasing"):
        edm_sample(net, latents, sigmas=[1.0, 2.0, 0.0], disable=True)
    assert EDMDenoiser(net).round_sigma(grids.karras(4, 0.1, 10.0)) == grids.karras(4, 0.1, 10.0)


def test_a_statistics_path_is_the_same_warm_start(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # One rule for warm_start= (gaussport.sampling.load_warm_start): the file is read on every call.
    from gaussport.analytic import Gaussian

    g = gaussian_of_shape(SHAPE, seed=3)
    path = tmp_path / "stats.npz"
    g.save(path)
    reads = []
    load = Gaussian.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Gaussian, "load", classmethod(lambda cls, p: reads.append(p) or load(cls, p)))
    latents = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    net = TinyEDMNet()
    by_object = edm_sample(net, latents, num_steps=8, warm_start=g, sigma_skip=3.0, disable=True)
    for _ in range(2):
        by_path = edm_sample(net, latents, num_steps=8, warm_start=str(path), sigma_skip=3.0, disable=True)
        assert torch.equal(by_path.x, by_object.x)
    assert len(reads) == 2
