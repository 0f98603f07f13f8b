"""The Gaussian: closed-form flow properties, exact transport, Tweedie, representations, fit, files."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gaussport.analytic import Dense, Diagonal, Gaussian, LowRankPlusIsotropic
from gaussport.testing import gaussians, random_gaussian, spectra

sigma = st.floats(1e-2, 50.0)


def _points(g: Gaussian, n: int = 4, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return g.mean + scale * torch.randn((n, *g.shape), generator=gen, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@given(g=gaussians(zeros=True), s0=sigma, s1=sigma, s2=sigma)
def test_flow_composition(g: Gaussian, s0: float, s1: float, s2: float) -> None:
    x = _points(g)
    assert _rel(g.flow(g.flow(x, s0, s1), s1, s2), g.flow(x, s0, s2)) < 1e-10


@given(g=gaussians(zeros=True), s0=sigma, s1=sigma)
def test_flow_identity_and_inverse(g: Gaussian, s0: float, s1: float) -> None:
    x = _points(g)
    assert torch.equal(g.flow(x, s0, s0), x)
    assert _rel(g.flow(g.flow(x, s0, s1), s1, s0), x) < 1e-10


@given(g=gaussians(min_dim=2, max_dim=6, zeros=True), s0=sigma, s1=st.floats(0.0, 50.0))
def test_flow_transports_the_covariance_exactly(g: Gaussian, s0: float, s1: float) -> None:
    # The flow is affine, x -> mu + A (x - mu); it must map Sigma + s0^2 I onto Sigma + s1^2 I.
    eye = torch.eye(g.dim, dtype=torch.float64)
    a = (g.flow(g.mean.reshape(1, -1) + eye, s0, s1) - g.mean.reshape(1, -1)).T
    cov = g.cov.dense()
    lhs = a @ (cov + s0**2 * eye) @ a.T
    rhs = cov + s1**2 * eye
    assert float((lhs - rhs).abs().max()) < 1e-9 * float(rhs.abs().max())


@given(g=gaussians(min_dim=1, max_dim=6), s=sigma)
def test_tweedie_denoiser_equals_score_by_autograd(g: Gaussian, s: float) -> None:
    x = _points(g).requires_grad_(True)
    (grad,) = torch.autograd.grad(g.log_prob(x, s).sum(), x)
    expected = x.detach() + s**2 * grad
    sig = torch.full((x.shape[0],), s, dtype=torch.float64)
    assert _rel(g(x.detach(), sig), expected) < 1e-9
    assert _rel(g.score(x.detach(), sig), grad) < 1e-9


@given(spec=spectra(min_dim=2, max_dim=7, zeros=True), seed=st.integers(0, 99), s0=sigma, s1=sigma)
def test_representations_agree_with_dense(spec: list[float], seed: int, s0: float, s1: float) -> None:
    if not any(v > 0 for v in spec):
        spec = [1.0] + spec[1:]
    dense = random_gaussian(spec, seed)
    low = random_gaussian(spec, seed, representation="lowrank")
    diag_dense = Gaussian(
        dense.mean, Dense(torch.tensor(spec, dtype=torch.float64), torch.eye(len(spec), dtype=torch.float64))
    )
    diag = random_gaussian(spec, seed, representation="diagonal")
    x = _points(dense)
    sig = torch.full((x.shape[0],), s0, dtype=torch.float64)
    for a, b in ((dense, low), (diag_dense, Gaussian(dense.mean, diag.cov))):
        assert torch.allclose(a.cov.dense(), b.cov.dense(), atol=1e-12)
        assert _rel(b(x, sig), a(x, sig)) < 1e-10
        assert _rel(b.flow(x, s0, s1), a.flow(x, s0, s1)) < 1e-10
        assert torch.allclose(b.log_prob(x, s0), a.log_prob(x, s0), rtol=1e-10)


def test_low_rank_with_isotropic_residual_equals_its_dense_matrix() -> None:
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(9, 3, generator=gen, dtype=torch.float64))
    lam, res = torch.tensor([4.0, 1.0, 0.3], dtype=torch.float64), 0.05
    low = Gaussian(torch.zeros(9, dtype=torch.float64), LowRankPlusIsotropic(lam, u, res))
    matrix = u @ torch.diag(lam) @ u.T + res * (torch.eye(9, dtype=torch.float64) - u @ u.T)
    dense = Gaussian(torch.zeros(9, dtype=torch.float64), matrix)
    x = _points(dense)
    sig = torch.full((4,), 0.7, dtype=torch.float64)
    assert _rel(low(x, sig), dense(x, sig)) < 1e-10
    assert _rel(low.flow(x, 5.0, 0.1), dense.flow(x, 5.0, 0.1)) < 1e-10
    assert torch.allclose(low.log_prob(x, 0.7), dense.log_prob(x, 0.7), rtol=1e-10)
    assert low.cov.trace() == pytest.approx(float(matrix.trace()), rel=1e-12)


def test_rank_deficient_flow_lands_on_the_support_and_contracts_as_sigma() -> None:
    g = random_gaussian([2.0, 0.5, 0.0, 0.0], seed=4)
    x = _points(g, scale=10.0)
    end = g.flow(x, 10.0, 0.0)
    u = g.cov.eigenvectors  # type: ignore[attr-defined]
    null = u[:, 2:]
    assert float(((end - g.mean) @ null).abs().max()) < 1e-12
    half = g.flow(x, 10.0, 5.0)
    assert torch.allclose((half - g.mean) @ null, 0.5 * (x - g.mean) @ null, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="rank-deficient"):
        g.flow(end, 0.0, 1.0)


@pytest.mark.reference
@pytest.mark.parametrize("sigma_to", [20.0, 1.0, 1e-3])
def test_flow_agrees_with_torchdiffeq_dopri5(sigma_to: float) -> None:
    torchdiffeq = pytest.importorskip("torchdiffeq")
    g = random_gaussian(np.logspace(0.5, -3, 8).tolist(), seed=5)
    x = g.sample(3, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)

    def velocity(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # dx/d(log sigma) = x - D(x, sigma)
        return y - g(y, torch.exp(u).expand(y.shape[0]))

    u = torch.tensor([math.log(80.0), math.log(sigma_to)], dtype=torch.float64)
    ode = torchdiffeq.odeint(velocity, x, u, rtol=1e-10, atol=1e-10, method="dopri5")[-1]
    assert _rel(ode, g.flow(x, 80.0, sigma_to)) < 1e-8


def test_sample_has_the_exact_marginal() -> None:
    g = random_gaussian([3.0, 1.0, 0.2], seed=6)
    n, s = 400_000, 0.5
    x = g.sample(n, s, torch.Generator().manual_seed(1), dtype=torch.float64)
    cov = g.cov.dense() + s**2 * torch.eye(3, dtype=torch.float64)
    # CLT: standard errors of the mean and of the covariance entries.
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert bool(((x.mean(0) - g.mean).abs() < 5 * se_mean).all())
    emp = torch.cov(x.T)
    se_cov = torch.sqrt((cov**2 + torch.outer(torch.diag(cov), torch.diag(cov))) / n)
    assert bool(((emp - cov).abs() < 5 * se_cov).all())


def test_sample_uses_only_the_generator() -> None:
    g = random_gaussian([1.0, 0.1], seed=0)
    before = torch.get_rng_state()
    a = g.sample(5, 1.0, torch.Generator().manual_seed(7))
    b = g.sample(5, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(before, torch.get_rng_state())
    assert a.shape == (5, 2) and a.dtype == torch.float32


def test_fit_is_centred_float64_and_streams() -> None:
    # A large offset with small variances: raw-moment float32 accumulation fails here
    # (docs/warm-start.md#why-raw-moments-fail-in-float32).
    gen = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    scales = torch.logspace(-0.5, -3.5, 16, dtype=torch.float64)
    data = (1e3 + (torch.randn(5000, 16, generator=gen, dtype=torch.float64) * scales) @ basis.T).float()
    ref = np.cov(data.double().numpy(), rowvar=False)  # independent float64 two-pass estimate
    g = Gaussian.fit(data.reshape(5000, 4, 4), batch_size=777)
    assert g.shape == (4, 4) and g.n_samples == 5000
    assert np.abs(g.cov.dense().numpy() - ref).max() < 1e-9 * np.abs(ref).max()
    assert float(g.cov.spectrum().min()) >= 0.0
    streamed = Gaussian.fit(iter(list(data.reshape(5000, 4, 4).split([1, 999, 2000, 2000]))))
    assert torch.allclose(streamed.cov.dense(), g.cov.dense(), rtol=1e-10, atol=1e-15)
    assert torch.allclose(streamed.mean, g.mean, rtol=1e-14)


def test_fit_representations() -> None:
    data = random_gaussian(np.logspace(0, -2, 10).tolist(), seed=1).sample(
        3000, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64
    )
    dense = Gaussian.fit(data)
    diag = Gaussian.fit(data, representation="diagonal")
    low = Gaussian.fit(data, representation="lowrank", rank=4)
    assert torch.allclose(diag.cov.dense().diagonal(), dense.cov.dense().diagonal(), rtol=1e-10)
    assert low.representation == "lowrank" and low.cov.rank == 4  # type: ignore[attr-defined]
    assert low.cov.trace() == pytest.approx(dense.cov.trace(), rel=1e-10)  # PPCA keeps the trace
    with pytest.raises(ValueError, match="needs rank"):
        Gaussian.fit(data, representation="lowrank")


@pytest.mark.parametrize("representation", ["dense", "diagonal", "lowrank"])
def test_save_load_round_trip(tmp_path, representation: str) -> None:  # type: ignore[no-untyped-def]
    g = random_gaussian([2.0, 1.0, 0.5, 0.0], seed=8, representation=representation)
    g = Gaussian(g.mean.reshape(2, 2), g.cov, n_samples=123, scale="[-1, 1]", source="test")
    path = tmp_path / "stats.npz"
    g.save(path)
    h = Gaussian.load(path)
    assert (h.shape, h.n_samples, h.scale, h.source, h.representation) == (
        (2, 2),
        123,
        "[-1, 1]",
        "test",
        representation,
    )
    x = _points(g)
    assert torch.equal(h.flow(x, 3.0, 0.5), g.flow(x, 3.0, 0.5))


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, ("/tmp/gaussport-unpickled-marker", "w"))


def test_load_rejects_files_that_are_not_ours_and_never_unpickles(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    marker = "/tmp/gaussport-unpickled-marker"
    if os.path.exists(marker):
        os.remove(marker)
    pickled = tmp_path / "evil.pkl"
    pickled.write_bytes(pickle.dumps(_Payload()))
    obj_npz = tmp_path / "objects.npz"
    np.savez(
        obj_npz,
        gaussport_format=np.array("gaussport.gaussian"),
        metadata=np.array([_Payload()], dtype=object),
    )
    plain = tmp_path / "plain.npz"
    np.savez(plain, mean=np.zeros(3))
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    pt = tmp_path / "weights.pt"
    torch.save({"mean": torch.zeros(3)}, pt)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a file format at all")
    for path in (pickled, obj_npz, plain, npy, pt, junk):
        with pytest.raises(ValueError, match="not a gaussport statistics file"):
            Gaussian.load(path)
    assert not os.path.exists(marker), "loading executed pickled code"


def test_bad_covariances_and_shapes() -> None:
    mean = torch.zeros(3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Gaussian(mean, torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        Gaussian(mean, torch.diag(torch.tensor([1.0, -0.5, 0.2])))
    with pytest.raises(ValueError, match="not symmetric"):
        Gaussian(mean, torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="1-D"):
        Gaussian(mean, torch.ones(3))
    with pytest.raises(ValueError, match="3 entries"):
        Gaussian(mean, torch.eye(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = Gaussian(mean, torch.diag(torch.tensor([1.0, -1e-9, 0.2], dtype=torch.float64)))
    assert any("clamped 1" in str(w.message) for w in caught)
    assert float(g.cov.spectrum().min()) == 0.0
    with pytest.raises(ValueError, match="sample shape"):
        g.flow(torch.zeros(2, 4), 1.0, 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        g(torch.zeros(2, 3, dtype=torch.long), torch.ones(2))


def test_affine_changes_units() -> None:
    g = random_gaussian([0.05, 0.02, 0.01], seed=9)  # e.g. statistics in [0, 1] pixel units
    h = g.affine(2.0, -1.0, units="[-1, 1]")
    assert h.scale == "[-1, 1]"
    assert torch.allclose(h.mean, 2 * g.mean - 1)
    assert torch.allclose(h.cov.dense(), 4 * g.cov.dense(), rtol=1e-12)
    x = g.sample(5, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(h.log_prob(2 * x - 1), g.log_prob(x) - 3 * math.log(2.0), rtol=1e-10)


def test_diagonal_gaussian_constructor() -> None:
    g = Gaussian.diagonal(torch.zeros(2, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert isinstance(g.cov, Diagonal) and g.shape == (2, 2)
    assert torch.allclose(g.cov.dense(), torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)))
