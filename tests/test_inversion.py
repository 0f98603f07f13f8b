"""invert(): the probability-flow ODE upwards (data to noise), and the teleport run in reverse.

Conventions: docs/conventions.md#grids (increasing grids, no step up from sigma = 0);
docs/warm-start.md#inversion-the-teleport-in-reverse. Per-solver support and the upward orders of
every registered solver: tests/solvers/test_inversion_contract.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

import gaussport
from gaussport import grids
from gaussport.analytic import anisotropic_mixture
from gaussport.inversion import invert
from gaussport.testing import CountingDenoiser, anisotropic_gaussian, random_gaussian

# Names both libraries have: k-diffusion runs them on increasing sigmas as they are written
# (ComfyUI's FlipSigmas + SamplerCustom), so the results must agree.
K_DIFFUSION_UPWARDS = ("euler", "heun", "dpmpp_2m")


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def flip_sigmas(sigmas: Tensor) -> Tensor:
    """ComfyUI's FlipSigmas node: reverse the grid and replace a leading 0 by 1e-4."""
    flipped = sigmas.flip(0).clone()
    if flipped[0] == 0:
        flipped[0] = 1e-4
    return flipped


@pytest.fixture(scope="module")
def mixture() -> Any:
    return anisotropic_mixture(dim=8, n_components=3, seed=2)  # a nonlinear exact denoiser


# ----------------------------------------------------------------------------- parity with k-diffusion
@pytest.mark.reference
@pytest.mark.parametrize("name", K_DIFFUSION_UPWARDS)
@pytest.mark.parametrize("sigmas", ["flipped-karras", "exponential-up"])
def test_matches_k_diffusion_on_increasing_sigmas(name: str, sigmas: str, mixture: Any) -> None:
    ks = pytest.importorskip("k_diffusion.sampling")
    up = {
        "flipped-karras": flip_sigmas(torch.tensor(grids.karras(9, 0.002, 80.0), dtype=torch.float64)),
        "exponential-up": torch.tensor(
            grids.exponential(7, 0.05, 14.6, append_zero=False)[::-1], dtype=torch.float64
        ),
    }[sigmas]
    x0 = mixture.sample(4, 0.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    theirs_cb: list[dict[str, Any]] = []
    seen: list[gaussport.StepInfo] = []
    theirs = getattr(ks, f"sample_{name}")(mixture, x0.clone(), up, callback=theirs_cb.append, disable=True)
    ours = invert(mixture, x0, up, name, callback=seen.append, disable=True)
    assert _rel(ours.x, theirs) < 1e-10
    assert ours.sigmas == tuple(up.tolist()) and ours.teleport is None
    assert [s.i for s in seen] == [d["i"] for d in theirs_cb] == list(range(len(up) - 1))
    for info, ref in zip(seen, theirs_cb, strict=True):
        assert info.sigma == float(ref["sigma"]) and info.sigma_next > info.sigma
        assert _rel(info.x, ref["x"]) < 1e-10 and _rel(info.denoised, ref["denoised"]) < 1e-10


# ----------------------------------------------------------------------------- exact on a Gaussian
def test_the_reverse_teleport_is_the_closed_form_flow() -> None:
    g = anisotropic_gaussian(dim=8)
    up = grids.karras(10, 0.01, 80.0, append_zero=False)[::-1]
    x0 = g.sample(3, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    counter = CountingDenoiser(g)
    # Teleport from the first level: the whole inversion is the flow map, no evaluation.
    whole = invert(counter, x0, up, "heun", warm_start=g, sigma_skip=up[0], disable=True)
    assert whole.nfe == counter.calls == 0 and whole.sigmas == (up[0],) and whole.teleport == (up[0], up[-1])
    assert torch.equal(whole.x, g.flow(x0, up[0], up[-1]))
    # Teleport from sigma_skip = up[k]: the solver's run below it, then the exact flow from there.
    for k in (3, 6):
        seen: list[gaussport.StepInfo] = []
        warm = invert(
            counter, x0, up, "heun", warm_start=g, sigma_skip=up[k], callback=seen.append, disable=True
        )
        below = invert(g, x0, up[: k + 1], "heun", disable=True)
        assert torch.equal(warm.x, g.flow(below.x, up[k], up[-1]))
        assert warm.sigmas == up[: k + 1] and warm.nfe == below.nfe == 2 * k
        assert max(counter.sigmas) <= up[k]  # an inversion pays evaluations only below sigma_skip
        # Callbacks: the solver's intervals, then the teleported ones on the exact path.
        assert [s.i for s in seen] == list(range(len(up) - 1))
        assert [s.teleported for s in seen] == [False] * k + [True] * (len(up) - 1 - k)
        for info in seen[k:]:
            on_path = g.flow(below.x, up[k], info.sigma)
            assert torch.allclose(info.x, on_path, rtol=1e-12, atol=1e-12 * float(on_path.abs().max()))
            sigma = torch.full((3,), info.sigma, dtype=torch.float64)
            assert torch.allclose(info.denoised, g(info.x, sigma), rtol=1e-12, atol=1e-12)


def test_round_trip_through_the_teleport_is_exact_to_round_off() -> None:
    # Inversion with the reverse teleport, then sampling with the teleport: the two flow maps are
    # each other's inverse, so with the teleport at the first level the round trip returns x0.
    g = random_gaussian([4.0, 1.0, 0.3, 0.05, 0.01, 0.002], seed=4)
    down = grids.karras(12, 0.002, 80.0, append_zero=False)
    x0 = g.sample(5, 0.002, torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = invert(g, x0, down[::-1], "dpmpp_2m", warm_start=g, sigma_skip=0.002, disable=True)
    back = gaussport.sample(g, noise.x, down, "dpmpp_2m", warm_start=g, sigma_skip=0.002, disable=True)
    assert noise.nfe == back.nfe == 0
    assert _rel(back.x, x0) < 1e-13
    # With the teleport at sigma = 1, each direction integrates only below 1: fewer evaluations and
    # (the Gaussian being the model) a smaller round-trip error than without the teleport.
    skip = 1.0
    up = invert(g, x0, down[::-1], "dpmpp_2m", warm_start=g, sigma_skip=skip, disable=True)
    again = gaussport.sample(g, up.x, down, "dpmpp_2m", warm_start=g, sigma_skip=skip, disable=True)
    plain_up = invert(g, x0, down[::-1], "dpmpp_2m", disable=True)
    plain = gaussport.solve(g, plain_up.x, down, "dpmpp_2m", disable=True)
    assert _rel(again.x, x0) < _rel(plain.x, x0)
    assert up.nfe < plain_up.nfe


@pytest.mark.parametrize("name", ["euler", "heun", "ddim", "dpmpp_2m", "unipc_bh2"])
def test_inversion_on_a_gaussian_converges_at_the_declared_order(name: str) -> None:
    # The solver's error against the closed-form flow vanishes at its (cold-start) order, upwards.
    g = anisotropic_gaussian(dim=8)
    solver = gaussport.solvers.get(name, **({"corrector": False} if name.startswith("unipc") else {}))
    errors = []
    for n in (32, 64, 128):
        up = grids.exponential(n + 1, 0.05, 3.0, append_zero=False)[::-1]
        x0 = g.sample(4, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
        errors.append(_rel(invert(g, x0, up, solver, disable=True).x, g.flow(x0, up[0], up[-1])))
    measured = math.log2(errors[1] / errors[2])
    assert abs(measured - solver.cold_start_order) < 0.2, (name, errors)


# ----------------------------------------------------------------------------- the API
def test_respace_keeps_the_number_of_steps_upwards() -> None:
    g = random_gaussian([4.0, 1.0, 0.1, 0.01], seed=0)
    up = grids.karras(10, 0.002, 80.0, append_zero=False)[::-1]
    x0 = g.sample(2, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[gaussport.StepInfo] = []
    sol = invert(
        g,
        x0,
        up,
        "euler",
        warm_start=g,
        sigma_skip=10.0,
        teleport="respace",
        callback=seen.append,
        disable=True,
    )
    assert sol.nfe == len(up) - 1 == len(seen) and sol.teleport == (10.0, 80.0)
    assert sol.sigmas == pytest.approx(grids.karras(10, 0.002, 10.0, append_zero=False)[::-1], rel=1e-9)
    family = invert(
        g, x0, up, "euler", warm_start=g, sigma_skip=10.0, teleport=grids.ExponentialFamily(), disable=True
    )
    assert family.sigmas == pytest.approx(
        grids.exponential(10, 0.002, 10.0, append_zero=False)[::-1], rel=1e-12
    )


def test_a_run_continued_upwards_equals_one_run() -> None:
    g = anisotropic_gaussian(dim=6)
    up = grids.exponential(9, 0.05, 10.0, append_zero=False)[::-1]
    x0 = g.sample(3, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("dpmpp_3m", "unipc_bh1", "ipndm_v"):
        full = invert(g, x0, up, name, disable=True)
        first = invert(g, x0, up[:4], name, disable=True)
        second = invert(g, first.x, up[3:], name, state=first.state, disable=True)
        assert torch.allclose(second.x, full.x, rtol=0, atol=1e-13), name
        # A state from a run downwards does not belong to an inversion starting there.
        down = gaussport.solve(g, g.flow(x0, up[0], 5.0), (5.0, 2.0, 1.0), name, disable=True)
        with pytest.raises(ValueError, match="in the same direction"):
            invert(g, down.x, (1.0, 3.0), name, state=down.state, disable=True)


def test_bad_inversion_input() -> None:
    g = random_gaussian([1.0, 0.1], seed=0)
    x0 = g.sample(2, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    # The step up from sigma = 0: refused, with the fix (a small first level, as ComfyUI does).
    with pytest.raises(ValueError, match=r"cannot start at sigma = 0.*1e-4"):
        invert(g, x0, [0.0, 0.5, 2.0], "euler", disable=True)
    with pytest.raises(ValueError, match="strictly increasing"):
        invert(g, x0, [0.1, 0.5, 0.5, 2.0], "euler", disable=True)
    with pytest.raises(ValueError, match="strictly increasing"):
        invert(g, x0, [2.0, 0.5, 0.0], "euler", disable=True)
    # solve and sample keep decreasing grids, and point to invert for the other direction.
    with pytest.raises(ValueError, match=r"strictly decreasing.*gaussport.invert"):
        gaussport.solve(g, x0, [0.1, 0.5, 2.0], "euler", disable=True)
    with pytest.raises(ValueError, match=r"strictly decreasing.*gaussport.invert"):
        gaussport.sample(g, x0, [0.1, 0.5, 2.0], "euler", warm_start=g, sigma_skip=0.5, disable=True)
    with pytest.raises(ValueError, match="outside the grid"):
        invert(g, x0, [0.1, 0.5, 2.0], "euler", warm_start=g, sigma_skip=3.0, disable=True)
    with pytest.raises(ValueError, match="without warm_start"):
        invert(g, x0, [0.1, 0.5, 2.0], "euler", sigma_skip=0.5, disable=True)
    with pytest.raises(ValueError, match="needs sigma_skip"):
        invert(g, x0, [0.1, 0.5, 2.0], "euler", warm_start=g, disable=True)
    with pytest.raises(ValueError, match=r"'dpm_solver_v3' cannot integrate an increasing grid.*euler"):
        invert(g, x0, [0.1, 0.5, 2.0], "dpm_solver_v3", disable=True)
    one = invert(g, x0, [0.0], "euler", disable=True)  # one level: a no-op, even at 0
    assert one.nfe == 0 and torch.equal(one.x, x0)


def test_a_warm_start_path_works_for_invert(tmp_path: Any) -> None:
    g = random_gaussian([1.0, 0.3, 0.05], seed=2)
    path = tmp_path / "stats.npz"
    g.save(path)
    up = grids.exponential(6, 0.05, 10.0, append_zero=False)[::-1]
    x0 = g.sample(2, up[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    by_path = invert(g, x0, up, "euler", warm_start=str(path), sigma_skip=1.0, disable=True)
    by_object = invert(g, x0, up, "euler", warm_start=g, sigma_skip=1.0, disable=True)
    assert torch.equal(by_path.x, by_object.x)


def test_the_warm_start_page_example_runs_as_written(tmp_path: Any, monkeypatch: Any) -> None:
    # docs/warm-start.md#inversion-the-teleport-in-reverse: its block, with a Gaussian as the model.
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "warm-start.md").read_text()
    section = text[text.index("## Inversion: the teleport in reverse") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]
    g = random_gaussian([2.0, 1.0, 0.5, 0.1], seed=7)
    g.save(tmp_path / "stats.npz")
    monkeypatch.chdir(tmp_path)
    x0 = g.sample(3, 0.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    namespace: dict[str, Any] = {"denoiser": g, "edited_denoiser": g, "x0": x0}
    exec(compile(block, "docs/warm-start.md", "exec"), namespace)
    noise, edited, down = namespace["noise"], namespace["edited"], namespace["down"]
    assert noise.teleport == (5.0, 80.0) and noise.nfe == edited.nfe == len(down) - 1
    # The same model back down: a round trip, closer than without the teleport at the same NFE.
    plain = gaussport.solve(g, invert(g, x0, down[::-1], "dpmpp_2m", disable=True).x, down, "dpmpp_2m")
    assert _rel(edited.x, x0) < 0.5 * _rel(plain.x, x0)
