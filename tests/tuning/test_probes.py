"""The probe record: closed-form values, the JSON round trip, the file cache and the budget rule."""

from __future__ import annotations

import math

import pytest
import torch

from gaussport.analytic import Diagonal, Gaussian
from gaussport.evaluation import velocity_error as evaluation_velocity_error
from gaussport.tuning.probes import (
    DEFAULT_LEVELS,
    PROBE_BUDGET_PER_NFE,
    ProbeRecord,
    probe,
    velocity_error,
)


def isotropic(mean: torch.Tensor, variance: float) -> Gaussian:
    return Gaussian(mean, Diagonal(torch.full((mean.numel(),), variance, dtype=torch.float64)))


class CountingGaussianModel(torch.nn.Module):
    """The denoiser of ``N(mean, variance I)`` as a module (so it has a fingerprint), counting samples."""

    def __init__(self, mean: torch.Tensor, variance: float) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(mean.clone(), requires_grad=False)
        self.variance = variance
        self.samples = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        s2 = sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) ** 2
        return self.mean + self.variance / (self.variance + s2) * (x - self.mean)


D, C = 8, 0.25
DELTA = 0.3


def _pair() -> tuple[CountingGaussianModel, Gaussian]:
    mean = torch.zeros(D, dtype=torch.float64)
    return CountingGaussianModel(mean, C), isotropic(mean + DELTA, C)


def test_velocity_error_is_re_exported_by_evaluation() -> None:
    assert evaluation_velocity_error is velocity_error


@pytest.mark.parametrize("with_data", [True, False])
def test_absolute_error_matches_the_closed_form(with_data: bool) -> None:
    # N(m, cI) vs N(m + delta, cI): D1 - D2 = -delta s^2 / (c + s^2) for every x, so the RMS of
    # |D - D_G| is |delta| s^2 / (c + s^2) exactly, whatever the probes.
    model, warm = _pair()
    data = torch.randn(5, D, dtype=torch.float64) if with_data else None
    levels = [0.1, 1.0, 10.0]
    record = probe(model, warm, data, levels=levels, probes=4, cache=False, model_dtype=torch.float64)
    assert record.levels == (10.0, 1.0, 0.1)
    assert record.source == ("data" if with_data else "gaussian")
    norm = DELTA * math.sqrt(D)
    for level, value in zip(record.levels, record.absolute_rms, strict=True):
        assert value == pytest.approx(norm * level**2 / (C + level**2), rel=1e-12)
    assert all(p >= 0 for p in record.relative_p90)


def test_round_trip_is_exact(tmp_path) -> None:
    model, warm = _pair()
    record = probe(model, warm, levels=[0.5, 5.0], probes=3, cache=False, model_dtype=torch.float64)
    path = tmp_path / "probe.json"
    record.save(path)
    assert ProbeRecord.load(path) == record


def test_cache_hit_pays_no_model_call(tmp_path) -> None:
    model, warm = _pair()
    first = probe(model, warm, probes=4, cache=tmp_path, model_dtype=torch.float64)
    assert model.samples == 4 * len(DEFAULT_LEVELS) == first.evaluations
    second = probe(model, warm, probes=4, cache=tmp_path, model_dtype=torch.float64)
    assert model.samples == first.evaluations  # read from the file
    assert second == first
    probe(model, warm, probes=4, cache=False, model_dtype=torch.float64)
    assert model.samples == 2 * first.evaluations  # cache=False measures again
    probe(model, warm, probes=4, seed=1, cache=tmp_path, model_dtype=torch.float64)
    assert model.samples == 3 * first.evaluations  # other settings: another file


def test_default_probe_fits_the_budget_at_nfe_4() -> None:
    model, warm = _pair()
    record = probe(model, warm, cache=False, model_dtype=torch.float64)
    assert record.evaluations == model.samples == 16 * 12
    assert record.evaluations <= PROBE_BUDGET_PER_NFE * 4


def test_data_probes_carry_a_surrogate_fitted_to_the_data(tmp_path) -> None:
    # Two clusters of identical points: k-means with K = 2 finds them, each component's mean is its
    # point and its variance the floor (1e-3 of the data's mean variance, here 1e-3 * 1.0).
    from gaussport.tuning.probes import fit_surrogate

    a, b = torch.full((D,), -1.0, dtype=torch.float64), torch.full((D,), 1.0, dtype=torch.float64)
    data = torch.stack([a] * 5 + [b] * 5)
    fitted = fit_surrogate(data, components=2)
    assert sorted(fitted.weights) == [5.0, 5.0]
    assert sorted(m[0] for m in fitted.means) == [-1.0, 1.0]
    assert all(v == pytest.approx(1e-3, rel=1e-12) for var in fitted.variances for v in var)
    model, warm = _pair()
    record = probe(
        model,
        warm,
        data,
        levels=[0.5, 5.0],
        probes=3,
        cache=False,
        model_dtype=torch.float64,
        departure=False,
    )
    assert record.surrogate is not None and len(record.surrogate.rms) == 2
    assert record.surrogate.shifts == record.surrogate.gains == ()  # not asked for
    # By default, with data and a Gaussian warm start, the departure is fitted.
    fitted = probe(model, warm, data, levels=[0.5, 5.0], probes=3, cache=False, model_dtype=torch.float64)
    assert fitted.surrogate is not None
    assert len(fitted.surrogate.shifts) == len(fitted.surrogate.gains) == 2
    assert fitted.surrogate.rms == record.surrogate.rms
    fitted.save(tmp_path / "fitted.json")
    assert ProbeRecord.load(tmp_path / "fitted.json") == fitted
    path = tmp_path / "probe.json"
    record.save(path)
    assert ProbeRecord.load(path) == record
    # A record written before surrogates existed (no key) still loads, without one.
    legacy = record.to_json()
    del legacy["surrogate"]
    assert ProbeRecord.from_json(legacy).surrogate is None
    assert probe(model, warm, levels=[0.5], probes=2, cache=False).surrogate is None


def test_surrogate_components_set_the_mixture_and_the_cache_key(tmp_path) -> None:
    # Three clusters of identical points: with 3 components k-means finds each point with its weight,
    # with 1 the single component sits at the data mean (0.5 * -1 + 0.2 * 1 + 0.3 * 3 = 0.6).
    points = [torch.full((D,), v, dtype=torch.float64) for v in (-1.0, 1.0, 3.0)]
    data = torch.stack([points[0]] * 5 + [points[1]] * 2 + [points[2]] * 3)
    model, warm = _pair()
    options = dict(levels=[0.5, 5.0], probes=3, cache=tmp_path, model_dtype=torch.float64)
    three = probe(model, warm, data, surrogate_components=3, **options)
    assert three.surrogate is not None
    assert sorted(zip((m[0] for m in three.surrogate.means), three.surrogate.weights, strict=True)) == [
        (-1.0, 5.0),
        (1.0, 2.0),
        (3.0, 3.0),
    ]
    calls = model.samples
    one = probe(model, warm, data, surrogate_components=1, **options)
    assert model.samples == 2 * calls  # another cache file, not the 3-component record
    assert one.surrogate is not None and one.surrogate.weights == (10.0,)
    assert one.surrogate.means[0][0] == pytest.approx(0.6, rel=1e-12)
    assert probe(model, warm, data, surrogate_components=3, **options) == three
    assert model.samples == 2 * calls  # read back


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_surrogate_components_must_be_a_positive_integer(bad) -> None:
    model, warm = _pair()
    with pytest.raises(ValueError, match="surrogate_components must be an integer >= 1"):
        probe(model, warm, torch.zeros(4, D, dtype=torch.float64), surrogate_components=bad, cache=False)
