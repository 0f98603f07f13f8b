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


@pytest.fixture(params=gaussport.solvers.available())
def solver_name(request: pytest.FixtureRequest) -> str:
    """Every registered solver, by name: contract tests run over all of them automatically."""
    return request.param
