"""Shared test configuration: hypothesis profiles, float64 numerics, the solver fixture."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import gaussport

# "ci" (default): reproducible and bounded; "dev": more examples, fresh randomness.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One intra-op thread: the suite is small tensor ops, where OpenMP hand-offs cost more than they
# save (measured: 62 s with 1 thread against 251 s with 2 on this 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _probe_cache(tmp_path_factory: pytest.TempPathFactory):
    """Probe records (``sigma_skip="auto"``) go to a directory of the run, not the user's cache."""
    previous = os.environ.get("GAUSSPORT_CACHE")
    os.environ["GAUSSPORT_CACHE"] = str(tmp_path_factory.mktemp("gaussport-cache"))
    yield
    if previous is None:
        os.environ.pop("GAUSSPORT_CACHE", None)
    else:
        os.environ["GAUSSPORT_CACHE"] = previous


@pytest.fixture(params=gaussport.solvers.available())
def solver_name(request: pytest.FixtureRequest) -> str:
    """Every registered solver, by name: contract tests run over all of them automatically."""
    return request.param
