"""Parity of the DPM-Solver++ family with k-diffusion's samplers (float64, identical grids, 1e-10).

k-diffusion's deterministic 3M is ``sample_dpmpp_3m_sde(eta=0)``; it implements the *published*
third-order formula, whose phi_3 term is half of what third order needs (docs/devdocs-derivations.md),
so parity is checked against our reference-compatible ``dpmpp_3m`` and the corrected
``dpmpp_3m_fixed`` is shown to differ from it.
"""

from __future__ import annotations

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import anisotropic_mixture

ks = pytest.importorskip("k_diffusion.sampling")
pytestmark = pytest.mark.reference


def _dpmpp_2m_sde_heun(model, x, sigmas, disable=None):  # noqa: ANN001, ANN202
    return ks.sample_dpmpp_2m_sde(
        model,
        x,
        sigmas,
        eta=0.0,
        solver_type="heun",
        disable=disable,
        noise_sampler=lambda s, t: torch.zeros_like(x),
    )


def _dpmpp_2m_sde_midpoint(model, x, sigmas, disable=None):  # noqa: ANN001, ANN202
    return ks.sample_dpmpp_2m_sde(
        model,
        x,
        sigmas,
        eta=0.0,
        solver_type="midpoint",
        disable=disable,
        noise_sampler=lambda s, t: torch.zeros_like(x),
    )


def _dpmpp_3m_sde(model, x, sigmas, disable=None):  # noqa: ANN001, ANN202
    return ks.sample_dpmpp_3m_sde(
        model, x, sigmas, eta=0.0, disable=disable, noise_sampler=lambda s, t: torch.zeros_like(x)
    )


def _dpmpp_2s(model, x, sigmas, disable=None):  # noqa: ANN001, ANN202
    return ks.sample_dpmpp_2s_ancestral(
        model, x, sigmas, eta=0.0, disable=disable, noise_sampler=lambda s, t: torch.zeros_like(x)
    )


PAIRS = {
    "dpmpp_2m": ks.sample_dpmpp_2m,
    "dpmpp_2m_taylor": _dpmpp_2m_sde_heun,  # k-diffusion's 'heun' 2M-SDE at eta=0 is the Taylor 2M
    "dpmpp_3m": _dpmpp_3m_sde,
    "dpmpp_2s": _dpmpp_2s,
}
GRIDS = [
    grids.karras(12, 0.002, 80.0),
    grids.exponential(7, 0.05, 14.6, append_zero=False),
    (3.0, 1.0, 0.2, 0.0),
    grids.karras(25, 0.03, 10.0),
]
GRID_IDS = ["karras-to-zero", "exponential-to-sigma_min", "start-mid", "karras-25-from-10"]


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def mixture():  # noqa: ANN201
    return anisotropic_mixture(dim=8, n_components=3, seed=2)  # a nonlinear denoiser


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("sigmas", GRIDS, ids=GRID_IDS)
def test_matches_k_diffusion(name: str, sigmas: tuple[float, ...], mixture) -> None:  # noqa: ANN001
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = PAIRS[name](mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True)
    ours = gaussport.solve(mixture, x, sigmas, name, disable=True).x
    assert _max_rel(ours, theirs) < 1e-10


@pytest.mark.parametrize("sigmas", GRIDS, ids=GRID_IDS)
def test_2m_sde_midpoint_at_eta_zero_is_2m(sigmas: tuple[float, ...], mixture) -> None:  # noqa: ANN001
    # docs/peer-conventions.md#sde-samplers-at-eta-0: k-diffusion's 2M-SDE ('midpoint', eta=0) equals its
    # 2M, and so ours.
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = _dpmpp_2m_sde_midpoint(
        mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True
    )
    assert _max_rel(gaussport.solve(mixture, x, sigmas, "dpmpp_2m", disable=True).x, theirs) < 1e-10


def test_corrected_3m_is_not_the_published_formula(mixture) -> None:  # noqa: ANN001
    # The corrected 3M differs from k-diffusion's by far more than round-off (the phi_3 term), on a
    # grid long enough for third-order steps; local/global orders: tests/solvers/test_multistep.py.
    sigmas = grids.karras(12, 0.002, 80.0)
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = _dpmpp_3m_sde(mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True)
    assert _max_rel(gaussport.solve(mixture, x, sigmas, "dpmpp_3m_fixed", disable=True).x, theirs) > 1e-4


def test_matches_k_diffusion_from_a_mid_trajectory_start(mixture) -> None:  # noqa: ANN001
    # Starting at sigma_mid with the partial grid is k-diffusion's own way
    # (docs/peer-conventions.md#starting-mid-trajectory).
    full = grids.karras(16, 0.002, 80.0)
    sigmas = full[6:]
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(3), dtype=torch.float64)
    for name in sorted(PAIRS):
        theirs = PAIRS[name](mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True)
        assert _max_rel(gaussport.solve(mixture, x, sigmas, name, disable=True).x, theirs) < 1e-10, name


@pytest.mark.parametrize(
    "sigmas",
    [
        grids.karras(12, 0.002, 80.0, append_zero=False),
        grids.exponential(7, 0.05, 14.6, append_zero=False),
        (3.0, 1.0, 0.2, 0.05),
    ],
    ids=["karras", "exponential", "start-mid"],
)
def test_variable_step_ipndm_is_k_diffusion_lms(sigmas: tuple[float, ...], mixture) -> None:  # noqa: ANN001
    # sample_lms(order=4) integrates the Lagrange polynomial of the slopes over each step (by scipy
    # quadrature, exact for polynomials): variable-step Adams-Bashforth 4, our ipndm_v. On a final
    # step to sigma = 0 the two differ on purpose: LMS extrapolates the slopes down to 0, gaussport
    # takes the Euler limit x = D like every other solver (docs/solvers.md).
    x = mixture.sample(6, sigmas[0], torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = ks.sample_lms(mixture, x.clone(), torch.tensor(sigmas, dtype=torch.float64), disable=True)
    assert _max_rel(gaussport.solve(mixture, x, sigmas, "ipndm_v", disable=True).x, theirs) < 1e-10
