"""Measured convergence order against the closed-form Gaussian flow (grids ending at sigma_min > 0)."""

from __future__ import annotations

import pytest

from gaussport import grids, testing


@pytest.mark.parametrize("family", [grids.Exponential(), grids.Karras(7.0)], ids=["logsnr", "karras"])
def test_declared_order_is_measured(solver_name: str, family: grids.GridFamily) -> None:
    testing.check_order(solver_name, tolerance=0.3, family=family)


def test_order_measurement_separates_orders() -> None:
    # The test above must be able to fail: Euler measured against Heun's declared order does.
    assert abs(testing.measured_order("euler") - 2) > 0.9
    assert abs(testing.measured_order("heun") - 1) > 0.9
