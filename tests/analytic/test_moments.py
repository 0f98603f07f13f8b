"""Streaming moments (gaussport.analytic.moments) and Gaussian.fit's data forms, devices and ranks.

Expected values come from an independent two-pass float64 estimate in NumPy (mean first, then the
centred product), never from the accumulator itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussport.analytic import Gaussian, MomentAccumulator

ROOT = Path(__file__).resolve().parents[2]


def two_pass(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance by the textbook two-pass formula, float64."""
    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    mean = x.sum(0) / x.shape[0]
    c = x - mean
    return mean, (c.T @ c) / (x.shape[0] - 1)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _splits(n: int, cuts: list[int]) -> list[int]:
    points = sorted({c % n for c in cuts} - {0})
    edges = [0, *points, n]
    return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


@settings(max_examples=30)
@given(
    n=st.integers(2, 40),
    d=st.integers(1, 6),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    seed=st.integers(0, 2**31 - 1),
    offset=st.sampled_from([0.0, 3.0, -1e3]),
    spread=st.sampled_from([1.0, 1e-3]),
)
def test_streaming_equals_two_pass_for_any_split(
    n: int, d: int, cuts: list[int], seed: int, offset: float, spread: float
) -> None:
    gen = np.random.default_rng(seed)
    x = offset + spread * gen.standard_normal((n, d)) @ gen.standard_normal((d, d))
    mean, cov = two_pass(x)
    acc = MomentAccumulator()
    for part in torch.from_numpy(x).split(_splits(n, cuts)):
        acc.update(part)
    assert acc.count == n
    # Both estimates round the deviations x - mean to eps |x|: 1e-12 relative for data of moderate
    # offset, scaled by |x| / std for a large mean (the reference is no more accurate there).
    conditioning = max(1.0, float(np.abs(x).max() / np.sqrt(np.diag(cov).max())))
    np.testing.assert_allclose(acc.mean.numpy(), mean, rtol=1e-12, atol=1e-12 * spread)
    assert rel(acc.covariance().numpy(), cov) <= 1e-12 * conditioning


def test_blocked_symmetric_update_in_every_mode() -> None:
    # d = 600: three row blocks of the upper-triangle update, uneven batches, a float32 batch scatter.
    gen = np.random.default_rng(1)
    x = 2.0 + gen.standard_normal((700, 600)) @ (gen.standard_normal((600, 600)) / 30)
    mean, cov = two_pass(x)
    parts = torch.from_numpy(x).split([1, 250, 449])
    results = {}
    for dtype in (torch.float64, torch.float32):
        acc = MomentAccumulator(accumulate_dtype=dtype, device="cpu")
        for part in parts:
            acc.update(part)
        got = acc.covariance().numpy()
        assert np.array_equal(got, got.T)
        np.testing.assert_allclose(acc.variances().numpy(), np.diag(cov), rtol=1e-6)
        results[dtype] = rel(got, cov)
        lam, u = acc.eigh()
        ref_lam = np.linalg.eigvalsh(cov)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert np.abs(lam.numpy() - ref_lam).max() <= tol * ref_lam.max()
        np.testing.assert_allclose((u * lam) @ u.T, cov, atol=10 * tol * ref_lam.max())
        with pytest.raises(ValueError, match="consumed"):
            acc.update(parts[0])
    assert results[torch.float64] <= 1e-12 and 1e-9 < results[torch.float32] <= 1e-5
    diag = MomentAccumulator(full=False)
    for part in parts:
        diag.update(part)
    np.testing.assert_allclose(diag.variances().numpy(), np.diag(cov), rtol=1e-12)


@pytest.mark.parametrize("accumulate_dtype", [None, torch.float32])
def test_float32_large_mean_small_variance_has_no_negative_eigenvalues(accumulate_dtype) -> None:  # type: ignore[no-untyped-def]
    # Raw float32 moments lose everything here (docs/warm-start.md#why-raw-moments-fail-in-float32).
    gen = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(24, 24, generator=gen, dtype=torch.float64))
    scales = torch.logspace(-1, -3, 24, dtype=torch.float64)
    x = (1e3 + (torch.randn(6000, 24, generator=gen, dtype=torch.float64) * scales) @ basis.T).float()
    _, cov = two_pass(x.double().numpy())
    acc = MomentAccumulator(accumulate_dtype=accumulate_dtype)
    for part in x.split(1000):
        acc.update(part)
    lam, _ = acc.eigh()
    ref = np.linalg.eigvalsh(cov)
    assert float(lam.min()) > 0.0
    assert np.abs(lam.numpy() - ref).max() <= 1e-5 * ref.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clamping warning either
        g = Gaussian.fit(x, batch_size=1000, accumulate_dtype=accumulate_dtype, disable=True)
    assert float(g.cov.spectrum().min()) > 0.0


def test_fit_data_forms_devices_and_representations() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(300, 2, 3, generator=gen, dtype=torch.float64) * torch.arange(1.0, 7.0).reshape(2, 3)
    _, cov = two_pass(x.numpy())
    ref = Gaussian.fit(x, representation="dense", batch_size=64, disable=True)
    assert ref.shape == (2, 3) and ref.n_samples == 300 and rel(ref.cov.dense().numpy(), cov) <= 1e-12
    forms = {
        "numpy": x.numpy(),
        "list": list(x.split(77)),
        "generator": (b for b in x.split(50)),
        "callable": lambda: x.split(128),
    }
    for name, data in forms.items():
        g = Gaussian.fit(data, device=torch.device("cpu"), disable=True)
        assert g.representation == "dense", name  # "auto" at d = 6
        assert rel(g.cov.dense().numpy(), cov) <= 1e-12, name
        assert torch.allclose(g.mean, ref.mean, rtol=1e-13), name
    # rank 0 is isotropic: the mean variance, from the diagonal alone.
    iso = Gaussian.fit(x, representation="lowrank", rank=0, disable=True)
    assert iso.cov.spectrum().unique().numel() == 1
    assert float(iso.cov.spectrum()[0]) == pytest.approx(np.trace(cov) / 6, rel=1e-12)
    # A one-shot iterator cannot be read twice: exact truncation of the dense fit.
    low = Gaussian.fit(iter(x.split(100)), representation="lowrank", rank=2, disable=True)
    lam = np.linalg.eigvalsh(cov)[::-1]
    np.testing.assert_allclose(low.cov.eigenvalues.numpy(), lam[:2], rtol=1e-12)  # type: ignore[attr-defined]
    assert low.cov.residual == pytest.approx(lam[2:].mean(), rel=1e-12)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"accumulate_dtype": torch.float16}, ValueError, "accumulate_dtype"),
        ({"accumulate_dtype": "float32"}, TypeError, "accumulate_dtype"),
        ({"device": 0}, TypeError, "device"),
        ({"device": "abacus"}, ValueError, "device"),
        ({"distributed": 1}, TypeError, "distributed"),
        ({"distributed": True}, ValueError, "process group"),
        ({"distributed": True, "representation": "lowrank", "rank": 1}, ValueError, "distributed"),
        ({"disable": "yes"}, TypeError, "disable"),
        ({"representation": "auto", "rank": 2}, ValueError, "rank"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs: dict, error: type, word: str) -> None:
    with pytest.raises(error, match=word):
        Gaussian.fit(torch.randn(5, 3), **kwargs)


def test_accumulator_rejects_bad_batches() -> None:
    with pytest.raises(TypeError, match="full"):
        MomentAccumulator(full=1)  # type: ignore[arg-type]
    acc = MomentAccumulator()
    with pytest.raises(TypeError, match="tensor"):
        acc.update(np.zeros((2, 3)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real"):
        acc.update(torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unsqueeze"):
        acc.update(torch.zeros(3))
    acc.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="differs"):
        acc.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        MomentAccumulator().covariance()
    with pytest.raises(TypeError, match="callable must return"):
        Gaussian.fit(lambda: 3, disable=True)


_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, torch.distributed as dist
    from gaussport.analytic import Gaussian, MomentAccumulator

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    x = torch.from_numpy(np.load(out + "/data.npy"))
    shard = x[:37] if rank == 0 else x[37:]  # uneven shards
    dense = Gaussian.fit(shard.split(16), representation="dense", distributed=True, disable=True)
    diag = Gaussian.fit(shard, representation="diagonal", distributed=True, disable=True)
    acc = MomentAccumulator()  # rank 1 brings no data at all
    if rank == 0:
        acc.update(x)
    acc.all_reduce()
    np.savez(
        f"{out}/rank{rank}.npz",
        mean=dense.mean.numpy(), cov=dense.cov.dense().numpy(), var=diag.cov.variances.numpy(),
        n=dense.n_samples, empty=acc.covariance().numpy(),
    )
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_gloo_fit_equals_single_process(tmp_path: Path) -> None:
    gen = np.random.default_rng(5)
    x = 4.0 + gen.standard_normal((101, 2, 4)) * np.linspace(0.1, 2.0, 8).reshape(2, 4)
    np.save(tmp_path / "data.npy", x)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), init, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in (0, 1)
    ]
    logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    mean, cov = two_pass(x)
    for r in (0, 1):
        got = np.load(tmp_path / f"rank{r}.npz")
        assert int(got["n"]) == 101
        np.testing.assert_allclose(got["mean"], mean.reshape(2, 4), rtol=1e-13)
        assert rel(got["cov"], cov) <= 1e-12
        np.testing.assert_allclose(got["var"], np.diag(cov), rtol=1e-12)
        assert rel(got["empty"], cov) <= 1e-12


def test_auto_representation_and_progress_bar(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import gaussport.analytic.gaussian as gaussian_module
    from gaussport.analytic.gaussian import MomentAccumulator as FromOldPlace

    assert FromOldPlace is MomentAccumulator
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    g = Gaussian.fit(x, disable=False)
    assert g.representation == "dense" and "sample" in capsys.readouterr().err  # throughput in samples/s
    # Where 3 d x d would not fit, "auto" streams the low-rank fit (it can read a tensor twice) ...
    monkeypatch.setattr(gaussian_module, "dense_fits_in_memory", lambda d, device: False)
    low = Gaussian.fit(x, disable=True)
    assert low.representation == "lowrank" and low.cov.rank == 5  # type: ignore[attr-defined]
    assert low.cov.trace() == pytest.approx(g.cov.trace(), rel=1e-12)
    # ... but not a one-shot iterator: an error that says what to pass.
    with pytest.raises(ValueError, match="callable"):
        Gaussian.fit(iter(x.split(16)), disable=True)
