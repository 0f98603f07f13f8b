"""The streamed low-rank fit: planted spectra, agreement with the truncated dense fit, no d x d."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from gaussport.analytic import Gaussian, LowRankPlusIsotropic, fit_low_rank
from gaussport.analytic.sketch import largest_principal_angle
from gaussport.ems import analytic_ems

PLANTED = torch.tensor([100.0, 50.0, 25.0, 12.0, 6.0], dtype=torch.float64)


def _planted(
    d: int = 200, n: int = 400, noise: float = 0.01, offset: float = 1e3, seed: int = 0
) -> torch.Tensor:
    """``offset + U diag(sqrt(PLANTED)) z + noise * eps`` with a random orthonormal ``U``: a large mean
    on purpose (raw moments would cancel; the fit centres every batch)."""
    gen = torch.Generator().manual_seed(seed)
    r = PLANTED.numel()
    u = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64)).Q
    z = torch.randn(n, r, generator=gen, dtype=torch.float64)
    return offset + (z * PLANTED.sqrt()) @ u.T + noise * torch.randn(n, d, generator=gen, dtype=torch.float64)


def _fit(data: torch.Tensor, split: int = 37, **kwargs: object) -> Gaussian:
    kwargs.setdefault("rank", PLANTED.numel())
    return fit_low_rank(
        lambda: data.split(split), generator=torch.Generator().manual_seed(1), disable=True, **kwargs
    )


@pytest.mark.parametrize(
    ("method", "passes"), [("randomized", 0), ("randomized", 1), ("randomized", 2), ("krylov", 1)]
)
def test_recovers_a_planted_spectrum(method: str, passes: int) -> None:
    data = _planted()
    dense = Gaussian.fit(data, representation="dense")
    lam = dense.cov.eigenvalues
    d, r, oversample = data.shape[1], PLANTED.numel(), 10
    width = r + oversample
    fit = _fit(data, method=method, passes=passes, oversample=oversample)
    # Subspace iteration: the Nystrom range is span(S^(q+1) Omega), so tan(angle) <= C gamma^(q+1) with
    # gamma = lam_(l+1) / lam_r and C = ||Omega_2 Omega_1^+|| <~ (sqrt(d - r) + sqrt(l)) / (sqrt(l) - sqrt(r))
    # (extreme singular values of Gaussian blocks); block Krylov's range contains that one. Slack 2.
    gamma = float(lam[width] / lam[r - 1])
    c = (math.sqrt(d - r) + math.sqrt(width)) / (math.sqrt(width) - math.sqrt(r))
    angle_tol = 2 * c * gamma ** (passes + 1) + 1e-12
    # Eigenvalues: the Nystrom error is below (1 + r / (p - 1)) tail_r (tail_r = sum of the discarded
    # eigenvalues) for one pass; each power iteration scales the tail by gamma^2. Slack 3.
    tail = float(lam[r:].sum())
    eig_tol = 3 * (1 + r / (oversample - 1)) * tail / float(lam[r - 1]) * gamma ** (2 * passes) + 1e-12
    angle = largest_principal_angle(fit.cov.eigenvectors, dense.cov.eigenvectors[:, :r])
    eig_err = float(((fit.cov.eigenvalues - lam[:r]) / lam[:r]).abs().max())
    assert angle <= angle_tol, (angle, angle_tol)
    assert eig_err <= eig_tol, (eig_err, eig_tol)
    assert torch.allclose(fit.mean, dense.mean, rtol=1e-14, atol=0)
    assert fit.n_samples == data.shape[0]
    # The residual keeps the trace, which the first pass accumulates exactly.
    trace = float(torch.var(data, dim=0).sum())
    assert math.isclose(fit.cov.trace(), trace, rel_tol=1e-12)
    if passes:
        assert math.isclose(fit.cov.residual, dense.to_low_rank(r).cov.residual, rel_tol=1e-6)


def test_more_passes_converge_and_batch_splits_agree() -> None:
    data = _planted(noise=0.5)  # a small gap: lam_(l+1) / lam_r ~ 0.1
    ref = Gaussian.fit(data, representation="dense").cov.eigenvectors[:, :5]
    angles = [largest_principal_angle(_fit(data, passes=q).cov.eigenvectors, ref) for q in range(3)]
    assert angles[0] > 10 * angles[1] > 100 * angles[2], angles
    a, b = _fit(data, split=400, passes=1), _fit(data, split=7, passes=1)
    assert torch.allclose(a.cov.eigenvalues, b.cov.eigenvalues, rtol=1e-11, atol=0)
    assert largest_principal_angle(a.cov.eigenvectors, b.cov.eigenvectors) < 1e-10


def test_flow_denoiser_ems_agree_with_the_truncated_dense_fit() -> None:
    data = _planted(d=60, n=150)
    r = PLANTED.numel()
    sketch = _fit(data, passes=2, scale="[-1, 1]", source="planted")
    dense = Gaussian.fit(data, representation="dense").to_low_rank(r)
    assert sketch.representation == "lowrank" and (sketch.scale, sketch.source) == ("[-1, 1]", "planted")
    x = dense.mean + 80 * torch.randn(
        (4, 60), generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    sigma = torch.full((4,), 0.5, dtype=torch.float64)
    pairs = [
        (sketch.flow(x, 80.0, 2.0), dense.flow(x, 80.0, 2.0)),
        (sketch(x, sigma), dense(x, sigma)),
        (sketch.score(x, sigma), dense.score(x, sigma)),
        (sketch.from_noise(x, 1.0), dense.from_noise(x, 1.0)),
        (sketch.log_prob(x, 1.0), dense.log_prob(x, 1.0)),
        (
            sketch.sample(3, 0.5, torch.Generator().manual_seed(3), dtype=torch.float64),
            dense.sample(3, 0.5, torch.Generator().manual_seed(3), dtype=torch.float64),
        ),
    ]
    for got, want in pairs:
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))
    ems_s = analytic_ems(sketch, sigma_min=0.1, sigma_max=80.0, intervals=6)
    ems_d = analytic_ems(dense, sigma_min=0.1, sigma_max=80.0, intervals=6)
    for name in ("l", "s", "b"):
        got, want = getattr(ems_s, name), getattr(ems_d, name)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-8 * float(want.abs().max())), name


class _LargestOutput(TorchFunctionMode):
    """Records the most elements of any tensor a torch function or tensor method returns.

    A function mode, not a dispatch mode: entering the first dispatch mode imports ~900 modules
    (seconds); every tensor the library code creates goes through a torch function anyway."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.filterwarnings("ignore:clamped")
def test_nothing_d_by_d_is_formed() -> None:
    d, batch = 400, 32
    data = _planted(d=d, n=96, noise=0.1)
    with _LargestOutput() as fit_mode:
        g = _fit(data, split=batch, passes=1, method="krylov")
    x = torch.randn((16, d), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.full((16,), 0.3, dtype=torch.float64)
    with _LargestOutput() as use_mode:
        g.flow(x, 80.0, 2.0)
        g(x, sigma)
        g.score(x, sigma)
        g.log_prob(x, 1.0)
        g.from_noise(x, 1.0)
        g.sample(16, 0.5, torch.Generator().manual_seed(0))
        analytic_ems(g, sigma_min=0.1, sigma_max=80.0, intervals=8)
    # The largest tensors are a batch [32, d] and the [d, 2 (r + 10)] Krylov basis.
    assert fit_mode.largest <= batch * d < d * d // 4, fit_mode.largest
    # In use: a batch [16, d], the [16, r] coefficients, the EMS tables (a few [levels, d]).
    assert use_mode.largest < d * d // 4, use_mode.largest
    with _LargestOutput() as dense_mode:  # the recorder does see a d x d matrix where there is one
        Gaussian.fit(data, representation="dense")
    assert dense_mode.largest >= d * d


@pytest.mark.filterwarnings("ignore:clamped")
def test_float32_sketches_rank_deficient_data_and_full_rank() -> None:
    data = _planted(d=50, n=300)
    dense = Gaussian.fit(data, representation="dense")
    g32 = _fit(data, passes=2, dtype=torch.float32)
    assert largest_principal_angle(g32.cov.eigenvectors, dense.cov.eigenvectors[:, :5]) < 1e-5
    assert torch.allclose(g32.cov.eigenvalues, dense.cov.eigenvalues[:5], rtol=1e-5)
    few = data[:4]  # 4 samples: the covariance has rank 3 < l
    g = fit_low_rank(lambda: few.split(3), rank=6, passes=1, disable=True)
    want = Gaussian.fit(few, representation="dense").cov.eigenvalues[:6]
    assert torch.allclose(g.cov.eigenvalues, want, rtol=1e-9, atol=1e-9 * float(want[0]))
    full = fit_low_rank(lambda: data.split(64), rank=50, passes=0, disable=True)
    assert full.cov.residual == 0.0
    assert torch.allclose(full.cov.dense(), dense.cov.dense(), rtol=0, atol=1e-9 * float(want[0]))


def test_bad_arguments_are_refused() -> None:
    data = _planted(d=20, n=30)
    ok = {"rank": 3, "disable": True}
    cases: list[tuple[type[Exception], str, dict]] = [
        (ValueError, r"rank must be in \[1, d\]", {"rank": 21}),
        (ValueError, "rank", {"rank": 0}),
        (TypeError, "rank", {"rank": True}),
        (TypeError, "rank", {"rank": 2.0}),
        (ValueError, "passes", {"passes": -1}),
        (ValueError, "oversample", {"oversample": -1}),
        (ValueError, "method", {"method": "lanczos"}),
        (ValueError, "dtype", {"dtype": torch.float16}),
        (TypeError, "generator", {"generator": 0}),
        (TypeError, "scale", {"scale": 1}),
    ]
    for error, match, change in cases:
        with pytest.raises(error, match=match):
            fit_low_rank(lambda: data.split(8), **{**ok, **change})
    with pytest.raises(TypeError, match="callable"):
        fit_low_rank(data, **ok)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        fit_low_rank(lambda: 3, **ok)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_low_rank(lambda: iter([data[:1]]), **ok)
    with pytest.raises(ValueError, match="no data"):
        fit_low_rank(lambda: iter([]), **ok)
    bad = data.clone()
    bad[3, 4] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_low_rank(lambda: bad.split(8), **ok)
    once = iter(data.split(8))  # an exhausted iterator on the second pass
    with pytest.raises(ValueError, match="same data"):
        fit_low_rank(lambda: once, **ok)
    gen = torch.Generator().manual_seed(0)  # random augmentation: every pass sees other data
    with pytest.raises(ValueError, match="different data"):
        fit_low_rank(lambda: (data + torch.randn(data.shape, generator=gen, dtype=data.dtype)).split(8), **ok)


def test_low_rank_covariance_apply_and_spectrum_without_d_by_d() -> None:
    gen = torch.Generator().manual_seed(4)
    u = torch.linalg.qr(torch.randn(30, 4, generator=gen, dtype=torch.float64)).Q
    cov = LowRankPlusIsotropic(torch.tensor([5.0, 3.0, 0.5, 0.1], dtype=torch.float64), u, residual=1.0)
    dense = u @ torch.diag(torch.tensor([5.0, 3.0, 0.5, 0.1], dtype=torch.float64) - 1.0) @ u.T + torch.eye(
        30
    )
    want = torch.linalg.eigvalsh(dense).flip(0)
    assert torch.allclose(cov.spectrum(), want, rtol=1e-12)
    v = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    assert torch.allclose(cov.apply(v, lambda lam: lam), v @ dense, rtol=1e-12, atol=1e-12)
