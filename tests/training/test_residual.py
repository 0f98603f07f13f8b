"""The Gaussian-residual denoiser: the zero-initialised model is the Gaussian denoiser, the coefficients
are EDM's for isotropic data and the unit-variance choices of docs/training.md otherwise, it samples with
the teleport unchanged, autocast leaves the Gaussian part in float32, and the docs example runs.

Expected values come from dense linear algebra (``torch.linalg.solve`` on the ``d x d`` matrices), not
from the spectral code under test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import gaussport
from gaussport.analytic import Dense, Gaussian, LowRankPlusIsotropic
from gaussport.training import GaussianResidualDenoiser

ROOT = Path(__file__).resolve().parents[2]
DIM = 6
SHAPE = (2, 3)  # a non-flat sample shape: the module must keep it


def _random_cov(seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(DIM, DIM, generator=gen, dtype=torch.float64)
    return a @ a.T / DIM + 0.05 * torch.eye(DIM, dtype=torch.float64)


def _gaussian(representation: str, seed: int = 0) -> Gaussian:
    gen = torch.Generator().manual_seed(seed + 100)
    mean = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    if representation == "dense":
        return Gaussian(mean, _random_cov(seed))
    if representation == "diagonal":
        return Gaussian.diagonal(mean, torch.rand(DIM, generator=gen, dtype=torch.float64) + 0.1)
    dense = Dense.from_matrix(_random_cov(seed))
    return Gaussian(mean, LowRankPlusIsotropic.from_dense(dense, 2))


class _Residual(nn.Module):
    """A small F(x_in, c_noise, label=None); ``zero=True`` zero-initialises the last layer (EDM practice)."""

    def __init__(self, *, zero: bool, dtype: torch.dtype = torch.float64, classes: int = 3) -> None:
        super().__init__()
        self.inner = nn.Linear(DIM + 1, 16, dtype=dtype)
        self.embed = nn.Embedding(classes, 16, dtype=dtype)
        self.out = nn.Linear(16, DIM, dtype=dtype)
        if zero:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x_in: Tensor, c_noise: Tensor, label: Tensor | None = None) -> Tensor:
        flat = torch.cat([x_in.reshape(x_in.shape[0], -1), c_noise[:, None].to(x_in.dtype)], dim=1)
        h = self.inner(flat)
        if label is not None:
            h = h + self.embed(label)
        return self.out(torch.tanh(h)).reshape(x_in.shape)


def _dense_matrix(g: Gaussian) -> Tensor:
    return g.cov.dense()


def _state(batch: int = 7, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn((batch, *SHAPE), generator=gen, dtype=torch.float64)
    sigma = torch.exp(torch.linspace(math.log(0.01), math.log(80.0), batch, dtype=torch.float64))
    return x, sigma


@pytest.mark.parametrize("representation", ["dense", "diagonal", "lowrank"])
def test_zero_initialised_residual_is_the_gaussian_denoiser(representation: str) -> None:
    g = _gaussian(representation)
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    x, sigma = _state()
    expected = g(x, sigma)
    torch.testing.assert_close(model(x, sigma), expected, rtol=0.0, atol=1e-14)
    # Conditioning passes through to the network and changes nothing while F is zero.
    label = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    torch.testing.assert_close(model(x, sigma, label=label), expected, rtol=0.0, atol=1e-14)
    # A network that is not zero moves it away from the Gaussian (the check above can fail).
    live = GaussianResidualDenoiser(_Residual(zero=False), g)
    assert float((live(x, sigma) - expected).detach().abs().max()) > 1e-3


@pytest.mark.parametrize("representation", ["dense", "diagonal", "lowrank"])
def test_coefficients_match_the_dense_derivation(representation: str) -> None:
    """c_out^2 = tr(posterior covariance)/d, c_in^2 = 1/(tr(Sigma)/d + sigma^2), c_noise = log(sigma)/4."""
    g = _gaussian(representation)
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    cov = _dense_matrix(g)
    eye = torch.eye(DIM, dtype=torch.float64)
    _, sigma = _state()
    for s, c_out, c_in, c_noise, weight in zip(
        sigma,
        model.c_out(sigma),
        model.c_in(sigma),
        model.c_noise(sigma),
        model.loss_weight(sigma),
        strict=True,
    ):
        posterior = cov - cov @ torch.linalg.solve(cov + s * s * eye, cov)
        assert float(c_out) ** 2 == pytest.approx(float(torch.trace(posterior)) / DIM, rel=1e-12)
        assert float(weight) == pytest.approx(DIM / float(torch.trace(posterior)), rel=1e-12)
        assert float(c_in) == pytest.approx(1.0 / math.sqrt(float(torch.trace(cov)) / DIM + s * s), rel=1e-12)
        assert float(c_noise) == pytest.approx(math.log(float(s)) / 4.0, rel=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda m, v: Gaussian(m, v * torch.eye(DIM, dtype=torch.float64)),
        lambda m, v: Gaussian.diagonal(m, torch.full((DIM,), v, dtype=torch.float64)),
        lambda m, v: Gaussian(
            m, LowRankPlusIsotropic(torch.empty(0, dtype=torch.float64), torch.empty(DIM, 0), v)
        ),
    ],
    ids=["dense", "diagonal", "lowrank-rank0"],
)
def test_isotropic_data_give_edm_preconditioning(make) -> None:  # type: ignore[no-untyped-def]
    """Sigma = sigma_data^2 I, mu = 0: D_G = c_skip x and c_out, c_in, lambda are EDM's (Table 1)."""
    sd = 0.5
    g = make(torch.zeros(DIM, dtype=torch.float64), sd * sd)
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    sigma = torch.tensor([0.002, 0.1, 0.5, 2.0, 80.0], dtype=torch.float64)
    edm_c_skip = sd**2 / (sigma**2 + sd**2)
    torch.testing.assert_close(
        model.c_out(sigma), sigma * sd / torch.sqrt(sigma**2 + sd**2), rtol=1e-13, atol=0
    )
    torch.testing.assert_close(model.c_in(sigma), 1.0 / torch.sqrt(sd**2 + sigma**2), rtol=1e-13, atol=0)
    torch.testing.assert_close(
        model.loss_weight(sigma), (sigma**2 + sd**2) / (sigma * sd) ** 2, rtol=1e-12, atol=0
    )
    x = torch.randn(5, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(model(x, sigma), edm_c_skip[:, None] * x, rtol=1e-13, atol=1e-15)


def test_regression_target_and_network_input_have_unit_variance() -> None:
    """Monte Carlo under the Gaussian: mean square of (x0 - D_G(x)) / c_out and of c_in (x - mu) are 1."""
    g = _gaussian("dense")
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    n = 20_000
    gen = torch.Generator().manual_seed(5)
    for level in (0.05, 0.7, 9.0):
        x0 = g.sample(n, generator=gen, dtype=torch.float64)
        sigma = torch.full((n,), level, dtype=torch.float64)
        x = x0 + level * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        target = (x0 - g(x, sigma)) / model.c_out(sigma).reshape(-1, 1, 1)
        x_in = model.c_in(sigma).reshape(-1, 1, 1) * (x - g.mean)
        for values in (target, x_in):
            per_sample = values.square().reshape(n, -1).mean(1)
            se = float(per_sample.std()) / math.sqrt(n)
            assert abs(float(per_sample.mean()) - 1.0) < 5 * se, (level, float(per_sample.mean()), se)


def test_state_dict_holds_only_the_network() -> None:
    net = _Residual(zero=False)
    model = GaussianResidualDenoiser(net, _gaussian("lowrank"))
    assert list(model.state_dict()) == [f"network.{k}" for k in net.state_dict()]
    fresh = GaussianResidualDenoiser(_Residual(zero=True), _gaussian("lowrank"))
    fresh.load_state_dict(model.state_dict())
    x, sigma = _state()
    torch.testing.assert_close(fresh(x, sigma), model(x, sigma), rtol=0, atol=0)


def test_default_sigma_data_is_the_root_mean_variance_and_can_be_set() -> None:
    g = _gaussian("diagonal")
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    assert model.sigma_data == pytest.approx(math.sqrt(g.cov.trace() / DIM), rel=1e-14)
    custom = GaussianResidualDenoiser(_Residual(zero=True), g, sigma_data=0.5)
    sigma = torch.tensor([1.0], dtype=torch.float64)
    assert float(custom.c_in(sigma)) == pytest.approx(1.0 / math.sqrt(1.25), rel=1e-14)


def test_sampling_with_the_teleport_works_unchanged() -> None:
    """A zero-initialised model samples exactly as its Gaussian does, teleport included."""
    g = _gaussian("dense")
    model = GaussianResidualDenoiser(_Residual(zero=True), g)
    x = 80.0 * torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigmas = gaussport.grids.karras(10, 0.002, 80.0)
    options = dict(warm_start=g, sigma_skip=5.0, disable=True, dtype=torch.float64)
    with torch.no_grad():
        ours = gaussport.sample(model, x, sigmas, "heun", **options)
        reference = gaussport.sample(g, x, sigmas, "heun", **options)
        live = GaussianResidualDenoiser(_Residual(zero=False), g)
        other = gaussport.sample(live, x, sigmas, "heun", **options)
    assert ours.nfe == reference.nfe
    torch.testing.assert_close(ours.x, reference.x, rtol=0, atol=1e-12)
    assert bool(torch.isfinite(other.x).all()) and float((other.x - reference.x).abs().max()) > 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_gaussian_part_in_float32(dtype: torch.dtype) -> None:
    g = _gaussian("dense")
    model = GaussianResidualDenoiser(_Residual(zero=True, dtype=torch.float32), g)
    x, sigma = _state()
    x32, s32 = x.float(), sigma.float()
    with torch.autocast("cpu", dtype=dtype):
        out = model(x32, s32)
    assert out.dtype == torch.float32
    # F is zero: the result is D_G computed in float32, not in the autocast dtype.
    torch.testing.assert_close(out, g(x32, s32), rtol=0, atol=1e-5)


def test_docs_example_runs(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every python block of docs/training.md runs as written (in one namespace, in order), in a
    temporary directory: the example writes its checkpoints to ``run/``."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "training.md").read_text(), flags=re.S)
    assert blocks, "docs/training.md has no python example"
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), namespace)
    assert math.isfinite(float(namespace["loss"].detach()))  # type: ignore[attr-defined]
    assert bool(torch.isfinite(namespace["out"].x).all())  # type: ignore[attr-defined]
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
