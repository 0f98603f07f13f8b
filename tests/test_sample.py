"""sample(): the analytic warm start (teleport) followed by a solver."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gaussport
from gaussport import grids
from gaussport.analytic import Gaussian
from gaussport.testing import CountingDenoiser, gaussians, random_gaussian


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@given(
    g=gaussians(min_dim=2, max_dim=8),
    n=st.integers(6, 20),
    k=st.integers(1, 4),
    solver=st.sampled_from(["euler", "heun"]),
)
def test_teleport_is_exact_above_sigma_skip(g: Gaussian, n: int, k: int, solver: str) -> None:
    """Exact data and the Gaussian's own denoiser: every state above sigma_skip is the closed-form flow
    (to round-off), and the result is the solver's run over the grid below sigma_skip from the exact
    state there -- the teleported part adds no error at all, so the warm run beats solving everything."""
    sig = grids.karras(n, 0.01, 80.0, append_zero=False)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[gaussport.StepInfo] = []
    warm = gaussport.sample(
        g, x, sig, solver, warm_start=g, sigma_skip=sig[k], disable=True, callback=seen.append
    )
    assert [s.teleported for s in seen] == [True] * k + [False] * (n - 1 - k)
    for info in seen[: k + 1]:  # the teleported intervals and the state handed to the solver
        on_path = g.flow(x, 80.0, info.sigma)
        assert torch.allclose(info.x, on_path, rtol=1e-12, atol=1e-12 * float(on_path.abs().max()))
    below = gaussport.solve(g, g.flow(x, 80.0, sig[k]), sig[k:], solver, disable=True)
    assert torch.allclose(warm.x, below.x, rtol=1e-12, atol=1e-12 * float(below.x.abs().max()))
    assert warm.nfe == below.nfe < gaussport.solvers.get(solver).evaluations(sig)
    assert warm.sigmas == sig[k:] and warm.teleport == (80.0, sig[k])
    exact = g.flow(x, 80.0, sig[-1])
    plain = gaussport.solve(g, x, sig, solver, disable=True)
    assert _rel(warm.x, exact) < _rel(plain.x, exact)


@given(g=gaussians(min_dim=1, max_dim=6, zeros=True), zero=st.booleans())
def test_teleport_to_sigma_min_reproduces_the_flow(g: Gaussian, zero: bool) -> None:
    sig = grids.karras(8, 0.02, 50.0, append_zero=zero)
    x = g.sample(3, 50.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    counter = CountingDenoiser(g)
    sol = gaussport.sample(counter, x, sig, "heun", warm_start=g, sigma_skip=0.02, disable=True)
    at_min = g.flow(x, 50.0, 0.02)
    if zero:  # one final step x = D(x, sigma_min), the solvers' last step
        expected = g(at_min, torch.full((3,), 0.02, dtype=torch.float64))
        assert counter.calls == 1
    else:
        expected = at_min
        assert counter.calls == 0
    assert torch.allclose(sol.x, expected, rtol=0, atol=1e-13 * float(expected.abs().max()))


def test_respace_keeps_steps_and_nfe() -> None:
    g = random_gaussian([4.0, 1.0, 0.1, 0.01], seed=0)
    sig = grids.karras(10, 0.002, 80.0)
    x = g.sample(4, 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = gaussport.solve(g, x, sig, "heun", disable=True)
    warm = gaussport.sample(
        g, x, sig, "heun", warm_start=g, sigma_skip=10.0, teleport="respace", disable=True
    )
    assert warm.nfe == plain.nfe and len(warm.sigmas) == len(sig)
    assert warm.sigmas == pytest.approx(grids.karras(10, 0.002, 10.0), rel=1e-9)
    exact = g.flow(x, 80.0, 0.0)
    assert _rel(warm.x, exact) < _rel(plain.x, exact)
    family = gaussport.sample(
        g, x, sig, "heun", warm_start=g, sigma_skip=10.0, teleport=grids.ExponentialFamily(), disable=True
    )
    assert family.sigmas == pytest.approx(grids.exponential(10, 0.002, 10.0), rel=1e-12)


def test_callbacks_cover_teleported_intervals() -> None:
    g = random_gaussian([2.0, 0.5], seed=3)
    sig = grids.karras(6, 0.01, 40.0)
    x = g.sample(2, 40.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[gaussport.StepInfo] = []
    mid = 0.5 * (sig[2] + sig[3])  # strictly inside interval 2
    gaussport.sample(g, x, sig, "euler", warm_start=g, sigma_skip=mid, callback=seen.append, disable=True)
    assert [s.i for s in seen] == list(range(len(sig) - 1))
    assert [s.teleported for s in seen] == [True, True, False, False, False, False]
    assert torch.allclose(seen[1].x, g.flow(x, 40.0, sig[1]), rtol=1e-12)
    assert torch.allclose(seen[1].denoised, g(seen[1].x, torch.full((2,), sig[1], dtype=torch.float64)))
    assert seen[2].sigma == mid and seen[2].sigma_next == sig[3]


def test_sample_without_warm_start_is_solve_and_bad_input() -> None:
    g = random_gaussian([1.0, 0.1], seed=0)
    sig = grids.karras(5, 0.01, 10.0)
    x = g.sample(2, 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match=r"use gaussport.solve"):
        deprecated = gaussport.sample(g, x, sig, "heun", disable=True).x
    assert torch.equal(deprecated, gaussport.solve(g, x, sig, "heun", disable=True).x)
    with pytest.raises(ValueError, match="outside the grid"):
        gaussport.sample(g, x, sig, warm_start=g, sigma_skip=11.0, disable=True)
    with pytest.raises(ValueError, match="needs sigma_skip"):
        gaussport.sample(g, x, sig, warm_start=g, disable=True)
    with pytest.raises(ValueError, match="without warm_start"):
        gaussport.sample(g, x, sig, sigma_skip=1.0, disable=True)
    with pytest.raises(ValueError, match="teleport must be"):
        gaussport.sample(g, x, sig, warm_start=g, sigma_skip=1.0, teleport="shrink", disable=True)
    with pytest.raises(TypeError, match="flow"):
        gaussport.sample(g, x, sig, warm_start=object(), sigma_skip=1.0, disable=True)
    with pytest.raises(ValueError, match="sample shape"):
        gaussport.sample(
            g, torch.zeros(2, 3, dtype=torch.float64), sig, warm_start=g, sigma_skip=1.0, disable=True
        )


def test_a_warm_start_path_is_the_gaussian_it_holds(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # One rule for warm_start= everywhere: a path is a file written by Gaussian.save, as in the
    # k-diffusion samplers and edm_sample (gaussport.sampling.load_warm_start).
    g = random_gaussian([2.0, 0.5, 0.1], seed=5)
    path = tmp_path / "stats.npz"
    g.save(path)
    sig = grids.karras(6, 0.01, 20.0)
    x = g.sample(2, 20.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    reads = []
    load = Gaussian.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Gaussian, "load", classmethod(lambda cls, p: reads.append(p) or load(cls, p)))
    by_object = gaussport.sample(g, x, sig, "heun", warm_start=g, sigma_skip=2.0, disable=True)
    for warm_start in (str(path), path, str(path)):
        by_path = gaussport.sample(g, x, sig, "heun", warm_start=warm_start, sigma_skip=2.0, disable=True)
        assert torch.equal(by_path.x, by_object.x) and by_path.teleport == by_object.teleport
    assert len(reads) == 3  # read on every call: no cache behind the caller's back
    with pytest.raises(FileNotFoundError, match="Gaussian.fit"):
        gaussport.sample(g, x, sig, warm_start=str(tmp_path / "missing.npz"), sigma_skip=2.0, disable=True)
    (tmp_path / "not_stats.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError):
        gaussport.sample(g, x, sig, warm_start=str(tmp_path / "not_stats.npz"), sigma_skip=2.0, disable=True)
