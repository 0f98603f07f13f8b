"""``auto_sigma_skip`` on exact targets whose best level is known by construction."""

from __future__ import annotations

import math

import pytest
import torch

import gaussport
from gaussport import grids
from gaussport.analytic import Diagonal, Gaussian
from gaussport.tuning import auto_sigma_skip, probe
from gaussport.tuning.auto import error_model


def isotropic(mean: torch.Tensor, variance: float) -> Gaussian:
    return Gaussian(mean, Diagonal(torch.full((mean.numel(),), variance, dtype=torch.float64)))


D, C = 8, 0.25
SIGMAS = grids.karras(6, 0.002, 80.0)


def _record(shift: float):
    mean = torch.zeros(D, dtype=torch.float64)
    model, warm = isotropic(mean, C), isotropic(mean + shift, C)
    return model, warm, probe(model, warm, probes=8, cache=False, model_dtype=torch.float64)


def test_exact_warm_start_teleports_as_far_as_the_candidates_go() -> None:
    # The model is the warm start: the teleport is exact (T = 0) and the solver's error shrinks with
    # the interval it has to cover, so the best level is the lowest candidate.
    model, warm, record = _record(0.0)
    assert max(record.absolute_rms) == 0.0
    level = auto_sigma_skip(model, warm, SIGMAS, "dpmpp_2m", probes=record)
    low = min(v for v in SIGMAS if v > 0)
    assert math.isclose(level, low * (SIGMAS[0] / low) ** (1 / 24), rel_tol=1e-12)
    # ... and the sample teleported there is closer to the exact endpoint than no teleport.
    x = 80.0 * torch.randn(4, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = warm.flow(x, 80.0, SIGMAS[-1])
    auto = gaussport.sample(
        model, x, SIGMAS, "dpmpp_2m", warm_start=warm, sigma_skip="auto", probes=record, teleport="respace"
    )
    plain = gaussport.solve(model, x, SIGMAS, "dpmpp_2m")
    assert auto.teleport == (80.0, level)
    assert (auto.x - exact).norm() < (plain.x - exact).norm()


def test_a_far_warm_start_is_never_used() -> None:
    # A warm start 100 data standard deviations off: any teleport is worse than none.
    model, warm, record = _record(50.0)
    assert auto_sigma_skip(model, warm, SIGMAS, "dpmpp_2m", probes=record) == SIGMAS[0]


def test_teleport_term_matches_the_closed_form_of_a_mean_shift() -> None:
    # N(0, cI) vs N(delta, cI): |D - D_G| = |delta| sigma^2 / (c + sigma^2) and the flow's gain from
    # sigma to the end is sqrt(c + end^2) / sqrt(c + sigma^2), so
    # T(s) = |delta| sqrt(c + end^2) (1 / sqrt(c + s^2) - 1 / sqrt(c + sigma_max^2)).
    mean = torch.zeros(D, dtype=torch.float64)
    model, warm = isotropic(mean, C), isotropic(mean + 0.3, C)
    levels = [0.001 * (100_000.0 ** (k / 59)) for k in range(60)]
    record = probe(model, warm, levels=levels, probes=2, cache=False, model_dtype=torch.float64)
    terms = error_model(warm, SIGMAS, gaussport.solvers.get("dpmpp_2m"), record, candidates=[0.05, 0.5, 5.0])
    norm, end = 0.3 * math.sqrt(D), SIGMAS[-1]
    for s in (0.05, 0.5, 5.0):
        expected = norm * math.sqrt(C + end**2) * (1 / math.sqrt(C + s**2) - 1 / math.sqrt(C + 80.0**2))
        assert terms[s][0] == pytest.approx(expected, rel=0.01)
    assert terms[80.0][0] == 0.0


@pytest.mark.parametrize("representation", ["dense", "low_rank", "rank_deficient"])
def test_teleport_term_gain_is_the_flow_maps_rms_gain(representation: str) -> None:
    # With a constant |D - D_G| = 1 the term is the trapezoid of k(sigma) over log sigma, k the RMS
    # gain of the flow map from sigma to the end on an isotropic random direction:
    # k^2 = |F|_F^2 / d with F the map's linear part, read here column by column from
    # Gaussian.flow itself (flow(e_i) - flow(0)), whatever the covariance's representation.
    from gaussport.analytic.covariance import Dense, LowRankPlusIsotropic
    from gaussport.tuning.auto import _teleport_error

    d = 6
    gen = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.tensor([2.0, 0.5, 0.1, 0.02, 0.003, 0.0004], dtype=torch.float64)
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    cov = {
        "dense": Dense(lam, basis),
        "low_rank": LowRankPlusIsotropic(lam[:3], basis[:, :3], residual=0.01),
        "rank_deficient": LowRankPlusIsotropic(lam[:2], basis[:, :2], residual=0.0),
    }[representation]
    warm = Gaussian(mean, cov)
    record = _record_with_ratios([1.0] * 6, [1.0] * 6)
    s, top, end, points = 0.3, 80.0, 0.002, 48
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)
    logs = torch.linspace(math.log(s), math.log(top), points, dtype=torch.float64)
    gains = []
    for v in logs.tolist():
        linear = warm.flow(eye, math.exp(v), end) - warm.flow(zero, math.exp(v), end)
        gains.append(float(linear.square().sum() / d) ** 0.5)
    expected = float(torch.trapezoid(torch.tensor(gains, dtype=torch.float64), logs))
    assert _teleport_error(record, warm, s, top, end, points) == pytest.approx(expected, rel=1e-12)
    assert _teleport_error(record, warm, top, top, end) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpm_solver_v3"])
def test_surrogate_sweep_is_the_sweep_when_the_model_is_the_surrogate(solver: str) -> None:
    # The model IS the mixture the probe fits to the data (same data, same seed) plus an affine
    # departure of the fitted form, shift + g0 (x - mu) + g1 H_sigma (x - mu) with constant
    # coefficients: the probe's least squares recover it exactly at every level (the model is in the
    # fitted family), so the surrogate is the model and S(s) must equal the teleported solve on the
    # model against the model's reference solve from the same draws (computed here through
    # gaussport.sample and reference_solve). For DPM-Solver-v3 this also checks that the sweep runs
    # the solver as sample() does: with the warm start's analytic EMS revised by its guard (NFE 5:
    # the guard's long-step rule applies).
    from gaussport.reference import reference_solve
    from gaussport.sampling import with_warm_start_statistics
    from gaussport.tuning.probes import fit_surrogate

    gen = torch.Generator().manual_seed(3)
    data = torch.cat([torch.randn(20, D, generator=gen, dtype=torch.float64) * 0.3 + c for c in (-1.0, 1.0)])
    mixture = fit_surrogate(data, seed=5).mixture()
    # An anisotropic warm start, so that (x - mu) and H (x - mu) are not collinear.
    warm = Gaussian(data.mean(0), Diagonal(torch.linspace(0.2, 2.0, D, dtype=torch.float64)))
    shift = torch.linspace(-0.05, 0.05, D, dtype=torch.float64)
    g0, g1 = -0.02, 0.3

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = float(sigma.reshape(-1)[0]) ** 2
        centred = x - warm.mean
        held = warm.cov.apply(centred, lambda lam: lam / (lam + s2))
        return mixture(x, sigma) + shift + g0 * centred + g1 * held

    record = probe(
        model, warm, data, probes=4, seed=5, cache=False, model_dtype=torch.float64, departure=True
    )
    assert record.surrogate is not None
    for fitted_shift, (f0, f1) in zip(record.surrogate.shifts, record.surrogate.gains, strict=True):
        assert torch.tensor(fitted_shift, dtype=torch.float64) == pytest.approx(shift, abs=1e-9)
        assert (f0, f1) == pytest.approx((g0, g1), abs=1e-9)
    grid = grids.karras(5, 0.002, 80.0)

    def sweep(form: str) -> dict[float, tuple[float, float]]:
        return error_model(
            warm,
            grid,
            gaussport.solvers.get(solver),
            record,
            candidates=[1.0],
            draws=4,
            seed=7,
            surrogate=form,
        )

    terms = sweep("departure")
    x_top = warm.sample(4, 80.0, torch.Generator().manual_seed(7), dtype=torch.float64).to(torch.float64)
    reference = reference_solve(model, x_top, grid, steps_per_unit=20)
    teleported = gaussport.sample(
        model, x_top, grid, solver, warm_start=warm, sigma_skip=1.0, teleport="respace"
    )
    plain = gaussport.solve(
        model, x_top, grid, with_warm_start_statistics(gaussport.solvers.get(solver), warm, grid)
    )
    rms = lambda v: float(v.norm(dim=1).square().mean().sqrt())  # noqa: E731
    # The surrogate carries the model's departure: no separate teleport term.
    assert terms[80.0][0] == 0.0 and terms[1.0][0] == 0.0
    assert terms[1.0][1] == pytest.approx(rms(teleported.x - reference), rel=1e-6)
    assert terms[80.0][1] == pytest.approx(rms(plain.x - reference), rel=1e-6)
    # The mixture form (the beta-scaled mixture, without the departure) is another sweep.
    assert sweep("mixture")[80.0][1] != pytest.approx(terms[80.0][1], rel=1e-3)


def test_departure_fit_is_least_squares() -> None:
    # fit_departure against an independent least-squares solve on the stacked columns
    # [1 (per coordinate), x - mu, H (x - mu)] of a random departure.
    from gaussport.tuning.probes import fit_departure

    gen = torch.Generator().manual_seed(11)
    warm = Gaussian(
        torch.randn(D, generator=gen, dtype=torch.float64),
        Diagonal(torch.rand(D, generator=gen, dtype=torch.float64) + 0.1),
    )
    x = torch.randn(6, D, generator=gen, dtype=torch.float64) * 2.0
    r = torch.randn(6, D, generator=gen, dtype=torch.float64)
    shift, gains = fit_departure(warm, x, r, 0.7)
    centred = x - warm.mean
    held = centred * (warm.cov.variances / (warm.cov.variances + 0.49))
    # Unknowns: D shifts and 2 gains; rows: every (probe, coordinate).
    design = torch.zeros(6 * D, D + 2, dtype=torch.float64)
    design[:, :D] = torch.eye(D, dtype=torch.float64).repeat(6, 1)
    design[:, D] = centred.reshape(-1)
    design[:, D + 1] = held.reshape(-1)
    solution = torch.linalg.lstsq(design, r.reshape(-1, 1)).solution.reshape(-1)
    assert shift == pytest.approx(solution[:D], abs=1e-10)
    assert gains == pytest.approx(solution[D:], abs=1e-10)
    # One probe: nothing to fit a gain from; the shift is the whole departure.
    shift, gains = fit_departure(warm, x[:1], r[:1], 0.7)
    assert gains.abs().max() == 0.0
    assert shift == pytest.approx(r[0], abs=1e-12)


class _OffsetGaussian(torch.nn.Module):
    """The warm start's denoiser plus a constant offset: a module, so its probe record is cached."""

    def __init__(self, warm: Gaussian, offset: float) -> None:
        super().__init__()
        self.warm = warm
        self.offset = torch.nn.Parameter(torch.full((D,), offset, dtype=torch.float64))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.warm(x.double(), sigma.double()) + self.offset


def test_auto_probes_with_the_departure_fit_and_uses_the_form_asked_for(tmp_path) -> None:
    # auto_sigma_skip(data=...) probes through the cache and, by default, fits the departure (a
    # constant offset: the record carries it); each surrogate form gives the level that the same
    # record gives when passed in with that form, and "auto" is the one surrogate_form names.
    from gaussport.tuning import ProbeRecord
    from gaussport.tuning.auto import surrogate_form

    gen = torch.Generator().manual_seed(4)
    data = torch.cat([torch.randn(12, D, generator=gen, dtype=torch.float64) * 0.3 + c for c in (-1.0, 1.0)])
    warm = Gaussian.fit(data)
    model = _OffsetGaussian(warm, 0.05)
    levels = {
        form: auto_sigma_skip(model, warm, SIGMAS, "dpmpp_2m", data=data, cache=tmp_path, surrogate=form)
        for form in ("auto", "departure", "mixture", "gaussian")
    }
    (path,) = (tmp_path / "probes").glob("*.json")  # one probe record served all four
    record = ProbeRecord.load(path)
    assert record.surrogate is not None and len(record.surrogate.shifts) == len(record.levels)
    for form, level in levels.items():
        assert auto_sigma_skip(model, warm, SIGMAS, "dpmpp_2m", probes=record, surrogate=form) == level
    assert levels["auto"] == levels[surrogate_form(record)]


def _record_with_ratios(model_rms: list[float], mixture_rms: list[float], fitted: bool = True):
    from gaussport.tuning import ProbeRecord, Surrogate

    n = len(model_rms)
    surrogate = Surrogate(
        sample_shape=(D,),
        weights=(1.0,),
        means=((0.0,) * D,),
        variances=((1.0,) * D,),
        rms=tuple(mixture_rms),
        shifts=((0.0,) * D,) * n if fitted else (),
        gains=((0.0, 0.0),) * n if fitted else (),
    )
    levels = tuple(80.0 / 2**k for k in range(n))
    return ProbeRecord(
        levels=levels,
        relative_mean=(0.1,) * n,
        relative_p90=(0.2,) * n,
        absolute_rms=tuple(model_rms),
        probes=4,
        seed=0,
        source="data",
        model=None,
        statistics=None,
        evaluations=4 * n,
        surrogate=surrogate,
    )


@pytest.mark.parametrize(
    ("model_rms", "mixture_rms", "fitted", "form"),
    [
        # upper half (80, 40, 20): ratios 4, 3, 2 -> median 3 >= 2; the lower half does not count
        ([4.0, 3.0, 2.0, 0.1, 0.1, 0.1], [1.0] * 6, True, "departure"),
        # ratios 4, 1.9, 1 -> median 1.9 < 2
        ([4.0, 1.9, 1.0, 9.0, 9.0, 9.0], [1.0] * 6, True, "mixture"),
        # odd count: upper half is the first 2 of 3 (80, 40): ratios 2, 2 -> median exactly 2
        ([2.0, 4.0, 0.0], [1.0, 2.0, 1.0], True, "departure"),
        # a mixture that equals the Gaussian there (b = 0): an infinite ratio
        ([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], True, "departure"),
        # ... unless the model equals it too (a = b = 0): ratio 1
        ([0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 1.0, 1.0], True, "mixture"),
        # no departure fit in the record: the mixture form whatever the ratios
        ([4.0, 3.0, 2.0, 0.1], [1.0] * 4, False, "mixture"),
    ],
)
def test_surrogate_form_follows_the_median_ratio_of_the_upper_levels(
    model_rms, mixture_rms, fitted, form
) -> None:
    from gaussport.tuning.auto import surrogate_form

    assert surrogate_form(_record_with_ratios(model_rms, mixture_rms, fitted)) == form


def test_surrogate_form_without_data_is_the_gaussian() -> None:
    from gaussport.tuning.auto import surrogate_form

    model, warm, record = _record(0.1)
    assert record.surrogate is None and surrogate_form(record) == "gaussian"


class _StandardNormalDenoiser(torch.nn.Module):
    """The exact denoiser of N(0, I) data, ``x / (1 + sigma^2)``, as a module (it has a device)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.scale * x / (1 + sigma[:, None] ** 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_probes_a_gpu_model_where_the_state_is(tmp_path, monkeypatch) -> None:
    # sample(..., sigma_skip="auto") with the model and the state on the GPU: the probe must run the
    # model there (it used to send the CPU probes to it), and the level is the CPU model's.
    warm = isotropic(torch.full((D,), 0.5, dtype=torch.float64), 1.0)
    x = 80.0 * torch.randn(3, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    monkeypatch.setenv("GAUSSPORT_CACHE", str(tmp_path / "cpu"))  # each run probes its own model
    on_cpu = gaussport.sample(_StandardNormalDenoiser().double(), x, SIGMAS, "dpmpp_2m", warm_start=warm,
                              sigma_skip="auto", teleport="respace")  # fmt: skip
    monkeypatch.setenv("GAUSSPORT_CACHE", str(tmp_path / "gpu"))
    on_gpu = gaussport.sample(_StandardNormalDenoiser().double().cuda(), x.cuda(), SIGMAS, "dpmpp_2m",
                              warm_start=warm, sigma_skip="auto", teleport="respace")  # fmt: skip
    assert on_gpu.teleport == pytest.approx(on_cpu.teleport, rel=1e-6)
    assert on_gpu.x.device.type == "cuda"


def test_surrogate_reference_is_shared_by_grids_with_the_same_ends(monkeypatch) -> None:
    # The surrogate's reference solve depends on a grid only through its ends: a second grid over the
    # same range reuses it (one solve for both), and the sweep equals the one computed afresh.
    import gaussport.tuning.auto as auto
    from gaussport.reference import reference_solve

    gen = torch.Generator().manual_seed(2)
    data = torch.cat([torch.randn(10, D, generator=gen, dtype=torch.float64) * 0.3 + c for c in (-1.0, 1.0)])
    warm = Gaussian.fit(data)
    record = probe(_OffsetGaussian(warm, 0.05), warm, data, probes=4, cache=False, model_dtype=torch.float64)
    solves = []

    def counted(*args, **kwargs):
        solves.append(args[2])
        return reference_solve(*args, **kwargs)

    monkeypatch.setattr(auto, "reference_solve", counted)
    monkeypatch.setattr(auto, "_REFERENCES", {})
    coarse, fine = grids.karras(4, 0.002, 80.0), grids.karras(9, 0.002, 80.0)
    solver = gaussport.solvers.get("dpmpp_2m")
    first = error_model(warm, coarse, solver, record, surrogate="departure", draws=4)
    shared = error_model(warm, fine, solver, record, surrogate="departure", draws=4)
    assert len(solves) == 1
    monkeypatch.setattr(auto, "_REFERENCES", {})
    assert error_model(warm, fine, solver, record, surrogate="departure", draws=4) == shared
    assert len(solves) == 2
    assert error_model(warm, coarse, solver, record, surrogate="mixture", draws=4) != first  # another key
    assert len(solves) == 3
