"""EMS for DPM-Solver-v3: the value object, the closed-form Gaussian EMS, the Monte-Carlo estimator.

Expected values come from plain dense linear algebra on the Gaussian (``P = sigma^2 (Sigma +
sigma^2 I)^-1`` etc.), from the per-dimension formula of docs/ems.md#independent-coordinates, and
from the sampling distributions of the estimators -- never from the spectral formulas under test.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussport
from gaussport.analytic import Dense, Diagonal, Gaussian, LowRankPlusIsotropic
from gaussport.ems import EMS, EMSEstimator, analytic_ems, estimate_ems
from gaussport.ems import analytic as ems_analytic
from gaussport.ems._quadrature import psi, step_integrals
from gaussport.testing import gaussians, random_gaussian


# ----------------------------------------------------------------------------- dense oracle
def dense_statistics(g: Gaussian, sigma: float) -> dict[str, torch.Tensor]:
    """l*, l*', Var f, Cov(f, f'), s*, b* per dimension by dense matrices (docs/ems.md, derivation)."""
    sig = g.cov.dense()
    d = sig.shape[0]
    mu = g.mean.reshape(-1)
    s2 = sigma * sigma
    c = sig + s2 * torch.eye(d, dtype=torch.float64)
    p = s2 * torch.linalg.inv(c)
    l = torch.diagonal(p)
    dl = -2.0 * torch.diagonal(p - p @ p)
    f_mat = p - torch.diag(l)  # f = F (x - mu) - l mu
    g_mat = -2.0 * p + p @ p + torch.diag(l) @ p - torch.diag(dl)  # f' = G (x - mu) - l' mu
    var = torch.diagonal(f_mat @ c @ f_mat.T)
    cov = torch.diagonal(f_mat @ c @ g_mat.T)
    var_fd = torch.diagonal(g_mat @ c @ g_mat.T)
    return {"l": l, "dl": dl, "var": var, "cov": cov, "var_fd": var_fd, "mu": mu}


# ----------------------------------------------------------------------------- analytic EMS
def test_independent_coordinates_reduce_to_the_per_dimension_formula() -> None:
    # docs/ems.md#independent-coordinates: l* = 1 / (1 + e^{2 lambda} s_d^2), s = 0, b = -l*' mu.
    sd = torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=torch.float64)
    mu = 0.5 * torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ems = analytic_ems(Gaussian.diagonal(mu, sd**2), sigma_min=0.002, sigma_max=80.0, intervals=40)
    lam = torch.tensor(ems.lambdas, dtype=torch.float64)[:, None]
    l_ref = 1.0 / (1.0 + torch.exp(2.0 * lam) * sd**2)
    # d/dlambda of 1 / (1 + e^{2 lambda} s^2) = -2 e^{2 lambda} s^2 / (1 + e^{2 lambda} s^2)^2
    dl_ref = -2.0 * torch.exp(2.0 * lam) * sd**2 * l_ref**2
    assert torch.allclose(ems.l, l_ref, rtol=1e-13, atol=0)
    assert torch.equal(ems.s, torch.zeros_like(ems.s))
    assert torch.allclose(ems.b, -dl_ref * mu, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("representation", ["dense", "lowrank"])
@settings(max_examples=15)
@given(g=st.integers(0, 2**31 - 1), dim=st.integers(2, 6), sigma=st.floats(0.01, 60.0))
def test_closed_form_matches_dense_linear_algebra(
    representation: str, g: int, dim: int, sigma: float
) -> None:
    spectrum = torch.logspace(0.5, -2.5, dim, dtype=torch.float64).tolist()
    gauss = random_gaussian(spectrum, g, representation=representation)
    ems = analytic_ems(gauss, sigma_min=sigma, sigma_max=2 * sigma, intervals=1)
    ref = dense_statistics(gauss, sigma)
    s_ref = ref["cov"] / ref["var"]
    assert torch.allclose(ems.l[-1], ref["l"], rtol=1e-10, atol=1e-14)
    assert torch.allclose(ems.s[-1], s_ref, rtol=1e-6, atol=1e-8)
    assert torch.allclose(ems.b[-1], ref["mu"] * (s_ref * ref["l"] - ref["dl"]), rtol=1e-6, atol=1e-8)


def test_representations_agree() -> None:
    variances = torch.tensor([2.0, 0.3, 0.05, 0.004], dtype=torch.float64)
    mu = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    perm = torch.eye(4, dtype=torch.float64)[[2, 0, 3, 1]]
    diagonal = Gaussian(mu, Diagonal(variances))
    # The same covariance eigen-decomposed with a permutation basis: U diag(U^T Sigma U) U^T = Sigma.
    axis_dense = Gaussian(mu, Dense(torch.diagonal(perm.T @ torch.diag(variances) @ perm), perm))
    assert torch.allclose(axis_dense.cov.dense(), torch.diag(variances), rtol=0, atol=1e-15)
    kwargs = {"sigma_min": 0.002, "sigma_max": 80.0, "intervals": 30}
    a, b = analytic_ems(diagonal, **kwargs), analytic_ems(axis_dense, **kwargs)
    for k in ("l", "s", "b"):
        assert torch.allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=1e-15), k
    # A low-rank covariance with a residual is the dense matrix it represents.
    rotated = random_gaussian([3.0, 1.0, 0.2, 0.05, 0.01, 0.01], seed=4)
    low = LowRankPlusIsotropic.from_dense(rotated.cov, 3)  # residual = mean of the last three eigenvalues
    lr = Gaussian(rotated.mean, low)
    equivalent = Gaussian(rotated.mean, low.dense())
    c, d = analytic_ems(lr, **kwargs), analytic_ems(equivalent, **kwargs)
    for k in ("l", "s", "b"):
        assert torch.allclose(getattr(c, k), getattr(d, k), rtol=1e-9, atol=1e-11), k


def test_blocked_evaluation_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dense EMS are filled by blocks of weight rows and chunks of levels (bounded memory at any
    # d); with blocks of 3 rows and 2 levels every element must be what one block gives, for dense
    # and low-rank covariances, including dimensions that lie in an eigenspace (decoupled).
    gen = torch.Generator().manual_seed(3)
    basis = torch.eye(10, dtype=torch.float64)
    basis[:6, :6] = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0]
    mixed = Gaussian(
        torch.randn(10, generator=gen, dtype=torch.float64), Dense(torch.logspace(0.5, -2, 10), basis)
    )
    low = Gaussian(mixed.mean, LowRankPlusIsotropic.from_dense(mixed.cov, 4))
    kwargs = {"sigma_min": 0.01, "sigma_max": 50.0, "intervals": 9}
    whole = [analytic_ems(g, **kwargs) for g in (mixed, low)]
    monkeypatch.setattr(ems_analytic, "_ROWS_ELEMENTS", 3 * 10)
    monkeypatch.setattr(ems_analytic, "_LEVEL_ELEMENTS", 2 * 6 * 10)
    for g, ref in zip((mixed, low), whole, strict=True):
        blocked = analytic_ems(g, **kwargs)
        for k in ("l", "s", "b"):
            assert torch.allclose(getattr(blocked, k), getattr(ref, k), rtol=1e-13, atol=1e-16), k
    assert bool((whole[0].s[:, 6:] == 0).all()) and bool((whole[0].s[:, :6] != 0).any())


def test_analytic_ems_validate_input() -> None:
    g = random_gaussian([1.0, 0.1], seed=0)
    with pytest.raises(TypeError, match="Gaussian"):
        analytic_ems(lambda x, s: x, sigma_min=0.1, sigma_max=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        analytic_ems(g, sigma_min=1.0, sigma_max=0.1)
    with pytest.raises(ValueError, match="intervals"):
        analytic_ems(g, sigma_min=0.1, sigma_max=1.0, intervals=0)


# ----------------------------------------------------------------------------- the estimator
def _hutchinson_sd(g: Gaussian, sigma: float, samples: int) -> torch.Tensor:
    # (v - J v) * v = P v * v has, for Rademacher v, variance sum_{k != d} P_dk^2 per dimension.
    p = sigma**2 * torch.linalg.inv(g.cov.dense() + sigma**2 * torch.eye(g.dim, dtype=torch.float64))
    off = p - torch.diag(torch.diagonal(p))
    return torch.sqrt((off**2).sum(1) / samples)


def _sampler(g: Gaussian):
    return lambda n, gen: g.sample(n, 0.0, gen, dtype=torch.float64)


@pytest.mark.parametrize("samples", [256, 4096])
def test_hutchinson_l_is_unbiased_with_the_predicted_spread(samples: int) -> None:
    g = random_gaussian([2.0, 0.5, 0.1, 0.01], seed=3)
    est = EMSEstimator(sigma_min=0.05, sigma_max=10.0, intervals=6, samples=samples, batch_size=4096)
    while est.phase == "l":
        est.run(g, _sampler(g), dtype=torch.float64, max_batches=1, disable=True)
    sigmas = [math.exp(-lam) for lam in analytic_ems(g, sigma_min=0.05, sigma_max=10.0, intervals=6).lambdas]
    for j, sigma in enumerate(sigmas):
        exact = dense_statistics(g, sigma)["l"]
        z = (est.arrays["l_value"][j] - exact) / _hutchinson_sd(g, sigma, samples)
        assert float(z.abs().max()) < 5.0, (j, z)
    # Independent coordinates: P is diagonal and the estimator is exact for any number of samples.
    diag = Gaussian.diagonal(
        torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0.1, 0.01], dtype=torch.float64)
    )
    exact_ems = analytic_ems(diag, sigma_min=0.05, sigma_max=10.0, intervals=6)
    est = EMSEstimator(sigma_min=0.05, sigma_max=10.0, intervals=6, samples=3, batch_size=3)
    while est.phase == "l":
        est.run(diag, _sampler(diag), dtype=torch.float64, max_batches=1, disable=True)
    assert torch.allclose(est.arrays["l_value"], exact_ems.l, rtol=1e-12, atol=0)


@pytest.mark.parametrize("samples", [1024, 16384])
def test_least_squares_s_b_are_unbiased_with_the_predicted_spread(samples: int) -> None:
    # With the exact l and l' given, s-hat and b-hat are least-squares fits on K Gaussian samples:
    # Var s-hat = Var r / (K Var f), Var b-hat = Var r (1 + (E f)^2 / Var f) / K with the residual
    # r = f' - s f - b, Var r = Var f' - Cov(f, f')^2 / Var f ((f, f') are jointly Gaussian).
    g = random_gaussian([2.0, 0.5, 0.1, 0.01], seed=3)
    grid = analytic_ems(g, sigma_min=0.1, sigma_max=10.0, intervals=5)
    sigmas = [math.exp(-lam) for lam in grid.lambdas]
    stats = [dense_statistics(g, s) for s in sigmas]
    l = torch.stack([st_["l"] for st_ in stats])
    dl = torch.stack([st_["dl"] for st_ in stats])
    est = EMSEstimator(
        sigma_min=0.1, sigma_max=10.0, intervals=5, samples=samples, batch_size=8192, l=l, l_derivative=dl
    )
    assert est.run(g, _sampler(g), dtype=torch.float64, disable=True)
    ems = est.result()
    for j, st_ in enumerate(stats):
        s_true = st_["cov"] / st_["var"]
        mean_f = -st_["l"] * st_["mu"]
        var_r = st_["var_fd"] - st_["cov"] ** 2 / st_["var"]
        sd_s = torch.sqrt(var_r / (samples * st_["var"]))
        sd_b = torch.sqrt(var_r * (1 + mean_f**2 / st_["var"]) / samples)
        b_true = st_["mu"] * (s_true * st_["l"] - st_["dl"])
        assert float(((ems.s[j] - s_true) / sd_s).abs().max()) < 5.0
        assert float(((ems.b[j] - b_true) / sd_b).abs().max()) < 5.0


def _fit_for(
    g: Gaussian, sigma: float, l: torch.Tensor, dl: torch.Tensor, samples: int
) -> tuple[torch.Tensor, ...]:
    """The least-squares (s, b) the estimator targets when it uses the curves ``l``, ``l'`` (any,
    not only the optimal ones), and their sampling standard deviations for K = ``samples``:
    ``f = (P - diag l)(x - mu) - l mu``, ``f' = (-2P + P^2 + diag(l) P - diag(l'))(x - mu) - l' mu``
    for ``x ~ N(mu, Sigma + sigma^2 I)``; (f, f') is jointly Gaussian, so the slope of K samples has
    variance ``Var r / (K Var f)`` and the intercept ``Var r (1 + (E f)^2 / Var f) / K``, with the
    residual variance ``Var r = Var f' - Cov(f, f')^2 / Var f``."""
    c = g.cov.dense() + sigma**2 * torch.eye(g.dim, dtype=torch.float64)
    p = sigma**2 * torch.linalg.inv(c)
    mu = g.mean.reshape(-1)
    f_mat = p - torch.diag(l)
    g_mat = -2.0 * p + p @ p + torch.diag(l) @ p - torch.diag(dl)
    var_f = torch.diagonal(f_mat @ c @ f_mat.T)
    cov = torch.diagonal(f_mat @ c @ g_mat.T)
    var_r = torch.diagonal(g_mat @ c @ g_mat.T) - cov**2 / var_f
    s = cov / var_f
    mean_f = -l * mu
    sd_s = torch.sqrt(var_r / (samples * var_f))
    sd_b = torch.sqrt(var_r * (1 + mean_f**2 / var_f) / samples)
    return s, -dl * mu + s * l * mu, sd_s, sd_b


def test_estimator_converges_to_the_analytic_ems() -> None:
    # The full pipeline (Hutchinson l, finite-difference l', least squares) on the Gaussian's own
    # denoiser. Tolerances per K, level by level: l within 6 Hutchinson standard deviations of l*;
    # s and b within 6 least-squares standard deviations of the exact least-squares targets for the
    # curves l-hat, l-hat' the estimator used (the noise of l enters s quadratically where Var f is
    # small -- high noise levels -- so it is conditioned on, not linearised); and against the exact
    # EMS, 64 x more samples cut the RMS error of l, s and b by at least 3 (~8 for pure sampling
    # noise; the finite-difference bias of l' is below 0.01 on this grid).
    g = random_gaussian([2.0, 0.5, 0.1, 0.01], seed=3)
    n, lo, hi = 24, 0.3, 10.0
    exact = analytic_ems(g, sigma_min=lo, sigma_max=hi, intervals=n)
    sigmas = [math.exp(-lam) for lam in exact.lambdas]
    errors = {}
    for samples in (256, 16384):
        est = EMSEstimator(
            sigma_min=lo, sigma_max=hi, intervals=n, samples=samples, batch_size=8192, smoothing=0
        )
        assert est.run(g, _sampler(g), dtype=torch.float64, disable=True)
        ems = est.result()
        sd_l = torch.stack([_hutchinson_sd(g, s, samples) for s in sigmas])
        assert float(((ems.l - exact.l) / sd_l).abs().max()) < 6.0
        for j, sigma in enumerate(sigmas):
            s_t, b_t, sd_s, sd_b = _fit_for(g, sigma, ems.l[j], est.arrays["l_derivative"][j], samples)
            assert float(((ems.s[j] - s_t) / sd_s).abs().max()) < 6.0, (samples, j)
            assert float(((ems.b[j] - b_t) / sd_b).abs().max()) < 6.0, (samples, j)
        errors[samples] = [float((getattr(ems, k) - getattr(exact, k)).pow(2).mean().sqrt()) for k in "lsb"]
    assert all(errors[16384][k] < errors[256][k] / 3 for k in range(3)), errors


def test_estimator_resumes_to_identical_numbers(tmp_path) -> None:
    g = random_gaussian([1.0, 0.2, 0.03], seed=1)
    settings_ = {"sigma_min": 0.1, "sigma_max": 5.0, "intervals": 4, "samples": 40, "batch_size": 16}
    whole = EMSEstimator(**settings_)
    assert whole.run(g, _sampler(g), dtype=torch.float64, disable=True)
    part = EMSEstimator(**settings_)
    path = tmp_path / "ems.ckpt.npz"
    for _ in range(100):
        done = part.run(g, _sampler(g), dtype=torch.float64, max_batches=4, disable=True)
        part.save(path)
        part = EMSEstimator.load(path)
        if done:
            break
    assert part.done
    a, b = whole.result(), part.result()
    for k in ("l", "s", "b"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    # estimate_ems with a checkpoint path resumes from it.
    again = estimate_ems(g, _sampler(g), checkpoint=path, sigma_min=0.1, sigma_max=5.0, disable=True)
    assert torch.equal(again.s, a.s)
    with pytest.raises(RuntimeError, match="not finished"):
        EMSEstimator(**settings_).result()


def test_estimator_accepts_a_dataset_tensor_and_float32() -> None:
    # A float32 data tensor, states in float32 (the defaults). (1) Agreement with the exact EMS within
    # the Monte-Carlo error of K samples, as in test_estimator_converges_to_the_analytic_ems; the data
    # set (M = 64 K rows, drawn with replacement) is large enough that its own sampling error, about
    # sqrt(K / M) = 1/8 of the tolerance unit, does not matter. (2) The same rows handed over by a
    # callable give the same numbers: rows are drawn from each batch's seed, independently of the noise.
    g = random_gaussian([1.0, 0.2, 0.03], seed=1)
    samples, lo, hi, n = 256, 0.1, 5.0, 3
    data = g.sample(64 * samples, 0.0, torch.Generator().manual_seed(0))
    assert data.dtype == torch.float32
    est = EMSEstimator(sigma_min=lo, sigma_max=hi, intervals=n, samples=samples, batch_size=256, smoothing=0)
    assert est.run(g, data, disable=True)
    ems = est.result()
    assert ems.source == "estimated" and ems.samples == samples and ems.shape == (3,)
    assert ems.l.dtype == ems.s.dtype == ems.b.dtype == torch.float64
    exact = analytic_ems(g, sigma_min=lo, sigma_max=hi, intervals=n)
    for j, lam in enumerate(exact.lambdas):
        sigma = math.exp(-lam)
        assert float(((ems.l[j] - exact.l[j]) / _hutchinson_sd(g, sigma, samples)).abs().max()) < 6.0, j
        s_t, b_t, sd_s, sd_b = _fit_for(g, sigma, ems.l[j], est.arrays["l_derivative"][j], samples)
        assert float(((ems.s[j] - s_t) / sd_s).abs().max()) < 6.0, j
        assert float(((ems.b[j] - b_t) / sd_b).abs().max()) < 6.0, j

    def same_rows(count: int, gen: torch.Generator) -> torch.Tensor:
        rows = torch.Generator().set_state(gen.get_state())  # a copy: the noise stream stays untouched
        return data[torch.randint(data.shape[0], (count,), generator=rows)]

    settings_ = {"sigma_min": lo, "sigma_max": hi, "intervals": n, "samples": 48, "batch_size": 16}
    from_tensor = estimate_ems(g, data, disable=True, **settings_)
    from_callable = estimate_ems(g, same_rows, disable=True, **settings_)
    for k in ("l", "s", "b"):
        assert torch.equal(getattr(from_tensor, k), getattr(from_callable, k)), k
    with pytest.raises(TypeError, match="data must be"):
        estimate_ems(g, [1, 2, 3], sigma_min=0.1, sigma_max=5.0, intervals=1, samples=2, disable=True)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the value object
def test_save_load_round_trip_without_pickle(tmp_path) -> None:
    ems = analytic_ems(random_gaussian([1.0, 0.1], seed=2), sigma_min=0.01, sigma_max=20.0, intervals=7)
    path = tmp_path / "ems.npz"
    ems.save(path)
    back = EMS.load(path)
    assert back.sigma_min == ems.sigma_min and back.sigma_max == ems.sigma_max and back.intervals == 7
    assert back.source == "analytic" and back.samples is None and back.metadata["representation"] == "dense"
    for k in ("l", "s", "b"):
        assert torch.equal(getattr(back, k), getattr(ems, k))
    with np.load(path, allow_pickle=False) as data:  # readable without unpickling
        assert set(data.files) >= {"l", "s", "b", "metadata"}
    bad = tmp_path / "pickled.npz"
    with open(bad, "wb") as f:
        pickle.dump({"l": 1}, f)
    with pytest.raises(ValueError, match="not a gaussport EMS file"):
        EMS.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, l=np.ones((3, 2)))
    with pytest.raises(ValueError, match="EMS.from_official"):
        EMS.load(other)


def test_float32_files_are_half_the_size_and_load_as_the_rounded_values(tmp_path) -> None:
    g = random_gaussian(torch.logspace(0.3, -2, 12, dtype=torch.float64).tolist(), seed=5)
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=400)
    full, half = tmp_path / "ems64.npz", tmp_path / "ems32.npz"
    ems.save(full)
    ems.save(half, dtype="float32")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    back = EMS.load(half)  # the same format: every loader reads it
    for k in ("l", "s", "b"):
        assert torch.equal(getattr(back, k), getattr(ems, k).float().double())
    with np.load(half, allow_pickle=False) as data:
        assert data["l"].dtype == np.float32
    # A run with the rounded statistics moves by a few 1e-6 (the step integrals amplify the 6e-8
    # rounding by int l ~ 10 over the range): < 1 % of the solver's own error at this NFE.
    x = g.sample(4, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = (80.0, 20.0, 5.0, 1.0, 0.3, 0.05, 0.002)
    exact = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=ems, disable=True).x
    rounded = gaussport.solve(g, x, sig, "dpm_solver_v3", ems=back, disable=True).x
    moved = float((rounded - exact).norm() / exact.norm())
    solver_error = float((exact - g.flow(x, 80.0, 0.002)).norm() / exact.norm())
    assert 0 < moved < 1e-5 and moved < 0.01 * solver_error, (moved, solver_error)
    with pytest.raises(ValueError, match="dtype must be 'float64' or 'float32'"):
        ems.save(half, dtype="float16")
    huge = EMS(
        torch.full((2, 1), 1e39, dtype=torch.float64),
        torch.zeros(2, 1),
        torch.zeros(2, 1),
        sigma_min=1.0,
        sigma_max=2.0,
    )
    with pytest.raises(ValueError, match="overflows float32.*dtype='float64'"):
        huge.save(tmp_path / "huge.npz", dtype="float32")


def test_reads_the_reference_file_layout(tmp_path) -> None:
    l = np.random.default_rng(0).uniform(0, 1, (5, 1, 2, 2))
    np.savez(tmp_path / "l.npz", l=l)
    np.savez(tmp_path / "sb.npz", s=np.zeros_like(l), b=np.ones_like(l))
    ems = EMS.from_official(
        tmp_path / "l.npz",
        tmp_path / "sb.npz",
        lambda_start=-math.log(80.0),
        lambda_end=-math.log(0.002),
        samples=1024,
    )
    assert ems.shape == (1, 2, 2) and ems.intervals == 4 and ems.samples == 1024
    assert ems.sigma_max == pytest.approx(80.0, rel=1e-14) and ems.sigma_min == pytest.approx(
        0.002, rel=1e-14
    )
    assert np.array_equal(ems.l.numpy(), l)


def test_construction_errors_name_the_problem() -> None:
    one = torch.ones(3, 2)
    with pytest.raises(ValueError, match="one shape"):
        EMS(one, one, torch.ones(4, 2), sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ValueError, match="N >= 1"):
        EMS(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2), sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ValueError, match="NaN"):
        EMS(torch.full((3, 2), float("nan")), one, one, sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EMS(one, one, one, sigma_min=1.0, sigma_max=0.1)
    ems = EMS(one, one, one, sigma_min=0.1, sigma_max=1.0)
    with pytest.raises(ValueError, match="do not fit data of sample shape"):
        ems.check_shape((3,))
    ems.check_shape((4, 2))
    with pytest.raises(ValueError, match="leave the range of the EMS"):
        ems.check_covers((2.0, 0.5))
    ems.check_covers((1.0, 0.1, 0.0))


def test_snap_reproduces_the_reference_quantisation() -> None:
    fixture = np.load("tests/fixtures/dpm_solver_v3_official.npz")
    import json

    cases = json.loads(str(fixture["provenance"]))["cases"]
    lr = fixture["ems_edm_lambda_range"]
    ems = EMS.from_lambdas(
        fixture["ems_edm_l"],
        fixture["ems_edm_s"],
        fixture["ems_edm_b"],
        lambda_start=float(lr[0]),
        lambda_end=float(lr[1]),
    )
    for case in cases:
        if case["schedule"] != "edm" or case["name"].startswith("edm_mid"):
            continue
        steps, skip = case["steps"], case["skip_type"]
        if skip == "logSNR":
            lam = np.linspace(-math.log(80.0), -math.log(0.002), steps + 1)
            raw = np.exp(-lam)
        elif skip == "time_uniform":
            raw = np.linspace(80.0, 0.002, steps + 1)
        else:  # Karras rho = 7 between the EMS end points
            ramp = np.linspace(0, 1, steps + 1)
            raw = (80.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
        snapped = ems.snap(raw.tolist())
        assert np.allclose(snapped, fixture[f"{case['name']}_sigmas"], rtol=1e-12), case["name"]
    assert ems.snap([80.0, 1.0, 0.0])[-1] == 0.0
    with pytest.raises(ValueError, match="same EMS level"):
        ems.snap([1.0, 0.999999, 0.5])


def test_degenerate_coefficients_are_the_exact_phi_functions() -> None:
    ems = EMS.degenerate((), sigma_min=0.01, sigma_max=50.0)
    levels = (50.0, 7.0, 0.3, 0.01)
    table = ems.coefficients(levels, degree=2)
    for (a, b), step in zip(zip(levels, levels[1:], strict=False), table.steps, strict=True):
        h = math.log(a / b)
        # phi_k = int_0^h e^u u^k / k! du; decay = e^{-h}.
        assert float(step.decay) == pytest.approx(math.exp(-h), rel=1e-15)
        assert float(step.phi[0]) == pytest.approx(math.expm1(h), rel=1e-14)
        assert float(step.phi[1]) == pytest.approx(math.exp(h) * (h - 1) + 1, rel=1e-13)
        assert float(step.phi[2]) == pytest.approx(math.exp(h) * (h * h / 2 - h + 1) - 1, rel=1e-12)
        assert float(step.bias) == 0.0 and float(step.b_gain) == 0.0 and float(step.s_gain) == 1.0
    assert ems.coefficients(levels, degree=2) is table  # cached by what it depends on


@settings(max_examples=60)
@given(z=st.floats(-40.0, 40.0), m=st.integers(0, 4))
def test_psi_matches_quadrature(z: float, m: int) -> None:
    # psi_m(z) = int_0^1 t^m e^{z t} dt, against Gauss-Legendre quadrature with 60 nodes.
    nodes, weights = np.polynomial.legendre.leggauss(60)
    t = 0.5 * (nodes + 1.0)
    reference = 0.5 * float(np.sum(weights * t**m * np.exp(z * t)))
    value = float(psi(m, torch.tensor([z], dtype=torch.float64))[0])
    assert value == pytest.approx(reference, rel=1e-12, abs=1e-300)


def test_both_quadrature_rules_converge_at_second_order() -> None:
    # Smooth EMS-like curves on [0, 2]: the step integrals from n and 2n cells differ by ~4x less
    # each time n doubles, and the two rules converge to one limit.
    def curves(n: int) -> tuple[torch.Tensor, ...]:
        u = torch.linspace(0.0, 2.0, n + 1, dtype=torch.float64)
        l = (1.0 / (1.0 + torch.exp(2 * u - 1.0)))[:, None]
        s = (0.8 * torch.sin(u) - 0.5)[:, None]
        b = (0.3 * torch.cos(3 * u))[:, None]
        return u, l, s, b

    results = {}
    for rule in ("exponential", "trapezoid"):
        vals = []
        for n in (16, 32, 64, 128):
            out = step_integrals(*curves(n), degree=2, rule=rule)
            vals.append(torch.stack([out["bias"], out["b_gain"], *out["phi"]]).reshape(-1))
        diffs = [float((vals[i] - vals[i + 1]).abs().max()) for i in range(3)]
        ratios = [diffs[i] / diffs[i + 1] for i in range(2)]
        assert all(3.5 < r < 4.5 for r in ratios), (rule, ratios)
        results[rule] = vals[-1]
    assert torch.allclose(results["exponential"], results["trapezoid"], rtol=1e-3)


@given(g=gaussians(min_dim=2, max_dim=5))
@settings(max_examples=10)
def test_analytic_ems_are_finite_for_any_gaussian(g: Gaussian) -> None:
    ems = analytic_ems(g, sigma_min=0.002, sigma_max=80.0, intervals=8)
    assert all(bool(torch.isfinite(getattr(ems, k)).all()) for k in ("l", "s", "b"))
    assert bool(((ems.l > 0) & (ems.l <= 1 + 1e-12)).all())


def test_estimator_runs_on_a_network_with_fused_attention() -> None:
    # scaled_dot_product_attention's fused CPU/GPU kernels have no forward-mode derivative; the
    # estimator falls back to the math backend. A tiny randomly initialised diffusers UNet.
    diffusers = pytest.importorskip("diffusers")
    with torch.random.fork_rng():  # module initialisation draws from the global RNG; keep it local
        torch.manual_seed(0)
        net = (
            diffusers.UNet2DModel(
                sample_size=8,
                in_channels=1,
                out_channels=1,
                block_out_channels=(8, 16),
                layers_per_block=1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=4,
                attention_head_dim=4,
            )
            .eval()
            .requires_grad_(False)
        )

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        return (
            x / (1 + s * s) + s / torch.sqrt(1 + s * s) * net(x / torch.sqrt(1 + s * s), sigma.log()).sample
        )

    ems = estimate_ems(
        denoiser,
        lambda n, gen: torch.randn((n, 1, 8, 8), generator=gen),
        sigma_min=0.1,
        sigma_max=10.0,
        intervals=1,
        samples=4,
        batch_size=4,
        disable=True,
    )
    assert ems.shape == (1, 8, 8) and all(bool(torch.isfinite(getattr(ems, k)).all()) for k in "lsb")
