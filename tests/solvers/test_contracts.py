"""The shared solver contract, run over every registered solver (gaussport.testing)."""

from __future__ import annotations

import pytest

import gaussport
from gaussport import testing


def test_constant_denoiser_is_exact(solver_name: str) -> None:
    testing.check_constant_exact(solver_name)


def test_batch_independent(solver_name: str) -> None:
    testing.check_batch_independent(solver_name)


def test_dtype_preserved(solver_name: str) -> None:
    testing.check_dtypes(solver_name)


def test_nfe_equals_declared(solver_name: str) -> None:
    testing.check_nfe(solver_name)


def test_global_rng_untouched(solver_name: str) -> None:
    testing.check_rng_untouched(solver_name)


def test_starts_at_any_sigma(solver_name: str) -> None:
    testing.check_start_anywhere(solver_name)


def test_docstring_states_order_cost_and_reference(solver_name: str) -> None:
    cls, _ = gaussport.solvers.solver_class(solver_name)
    doc = (cls.__doc__ or "").lower()
    assert "order" in doc and "evaluation" in doc and "reference" in doc, (
        f"{cls.__name__} docstring incomplete"
    )


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="Available solvers: .*euler"):
        gaussport.solvers.get("eulr")
    with pytest.raises(ValueError, match="Did you mean 'euler'"):
        gaussport.solvers.get("eulr")
    with pytest.raises(TypeError, match="has no option"):
        gaussport.solvers.get("heun", ordr=2)
    with pytest.raises(ValueError, match="already registered"):
        gaussport.solvers.register("euler")(gaussport.solvers.solver_class("euler")[0])


def test_register_and_unregister_a_solver() -> None:
    cls, _ = gaussport.solvers.solver_class("euler")
    gaussport.solvers.register("_euler_copy")(cls)
    try:
        assert "_euler_copy" in gaussport.solvers.available()
        assert isinstance(gaussport.solvers.get("_euler_copy"), cls)
    finally:
        gaussport.solvers.unregister("_euler_copy")
    assert "_euler_copy" not in gaussport.solvers.available()
    with pytest.raises(ValueError, match="unknown solver"):
        gaussport.solvers.unregister("_euler_copy")
