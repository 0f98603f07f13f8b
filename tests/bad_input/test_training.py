"""Bad input, category "training": the Gaussian-residual denoiser and the training losses.

Every argument of :class:`gaussport.training.GaussianResidualDenoiser`, its ``forward``,
:func:`gaussport.training.edm_loss` and :func:`gaussport.training.bootstrapped_dsm_loss` is checked up
front: a wrong type is a TypeError, a wrong value a ValueError, each naming the argument and the fix
(docs/conventions.md#bad-input). The analytic Gaussian (or a mixture, or one of their bound methods) as
the bootstrap teacher is a ValueError that says why. Values the losses accept (``mix`` in [0, 1], any
``sigma_burn >= 0``) give a finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _rules import finite_or_rejected, rejected
from _tiny import DIM, tiny_gaussian
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from gaussport.analytic import GaussianMixture
from gaussport.training import GaussianResidualDenoiser, bootstrapped_dsm_loss, edm_loss

G = tiny_gaussian()
LEVELS = (0.2, 0.5, 1.0, 2.0)


class _Net(nn.Module):
    def __init__(self, shape_out: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(DIM, DIM)
        self.shape_out = shape_out

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        out = self.lin(x)
        return out if self.shape_out is None else out.reshape(self.shape_out)


MODEL = GaussianResidualDenoiser(_Net(), G)
X0 = torch.randn(4, DIM, generator=torch.Generator().manual_seed(0))
SIGMA = torch.full((4,), 0.7)


def _bsm(**overrides: Any) -> Callable[[], Any]:
    kwargs: dict[str, Any] = {"teacher": MODEL, "gaussian": G, "levels": LEVELS}
    kwargs.update(overrides)
    x0 = kwargs.pop("x0", X0)
    return lambda: bootstrapped_dsm_loss(MODEL, x0, **kwargs)


def _edm(**overrides: Any) -> Callable[[], Any]:
    x0 = overrides.pop("x0", X0)
    return lambda: edm_loss(MODEL, x0, **overrides)


CASES: dict[str, Callable[[], Any]] = {
    # the module
    "network not a Module": lambda: GaussianResidualDenoiser(lambda x, c: x, G),  # type: ignore[arg-type]
    "gaussian a tensor": lambda: GaussianResidualDenoiser(_Net(), torch.eye(DIM)),  # type: ignore[arg-type]
    "gaussian a mixture": lambda: GaussianResidualDenoiser(_Net(), GaussianMixture([G])),  # type: ignore[arg-type]
    "sigma_data zero": lambda: GaussianResidualDenoiser(_Net(), G, sigma_data=0.0),
    "sigma_data negative": lambda: GaussianResidualDenoiser(_Net(), G, sigma_data=-1.0),
    "sigma_data nan": lambda: GaussianResidualDenoiser(_Net(), G, sigma_data=math.nan),
    "sigma_data bool": lambda: GaussianResidualDenoiser(_Net(), G, sigma_data=True),
    "sigma_data string": lambda: GaussianResidualDenoiser(_Net(), G, sigma_data="0.5"),  # type: ignore[arg-type]
    "zero-variance gaussian": lambda: GaussianResidualDenoiser(
        _Net(), type(G)(torch.zeros(DIM), torch.zeros(DIM, DIM))
    ),
    # forward
    "x of another sample shape": lambda: MODEL(torch.zeros(4, DIM + 1), SIGMA),
    "x integer": lambda: MODEL(torch.zeros(4, DIM, dtype=torch.int64), SIGMA),
    "x a list": lambda: MODEL([[0.0, 0.0]], SIGMA),  # type: ignore[arg-type]
    "sigma of the wrong length": lambda: MODEL(torch.zeros(4, DIM), torch.ones(3)),
    "sigma 2-D": lambda: MODEL(torch.zeros(4, DIM), torch.ones(4, 1)),
    "sigma complex": lambda: MODEL(torch.zeros(4, DIM), torch.ones(4, dtype=torch.complex64)),
    "network of the wrong output shape": lambda: GaussianResidualDenoiser(_Net(shape_out=(8, 1)), G)(
        torch.zeros(4, DIM), SIGMA
    ),
    # edm_loss
    "edm x0 integer": _edm(x0=torch.zeros(4, DIM, dtype=torch.int64)),
    "edm x0 1-D": _edm(x0=torch.zeros(DIM)),
    "edm x0 empty batch": _edm(x0=torch.zeros(0, DIM)),
    "edm x0 nan": _edm(x0=torch.full((4, DIM), math.nan)),
    "edm p_std negative": _edm(p_std=-1.0),
    "edm p_mean nan": _edm(p_mean=math.nan),
    "edm p_mean string": _edm(p_mean="-1.2"),
    "edm sigma_data zero": _edm(sigma_data=0.0),
    "edm weighting unknown": _edm(weighting="karras"),
    "edm weighting a number": _edm(weighting=1.0),
    "edm weighting denoiser without loss_weight": lambda: edm_loss(lambda x, s: x, X0, weighting="denoiser"),
    "edm weighting of the wrong shape": _edm(weighting=lambda s: s.sum()),
    "edm generator a seed": _edm(generator=0),
    "edm sigma wrong shape": _edm(sigma=torch.ones(3)),
    "edm sigma zero": _edm(sigma=torch.zeros(4)),
    "edm sigma negative": _edm(sigma=-torch.ones(4)),
    "edm sigma a list": _edm(sigma=[1.0] * 4),
    # bootstrapped_dsm_loss
    "bsm teacher the Gaussian": _bsm(teacher=G),
    "bsm teacher the Gaussian's method": _bsm(teacher=G.__call__),
    "bsm teacher the Gaussian's score": _bsm(teacher=G.score),
    "bsm teacher a mixture": _bsm(teacher=GaussianMixture([G])),
    "bsm teacher not callable": _bsm(teacher=3),
    "bsm gaussian a mixture": _bsm(gaussian=GaussianMixture([G])),
    "bsm gaussian None": _bsm(gaussian=None),
    "bsm x0 of another shape": _bsm(x0=torch.zeros(4, DIM + 1)),
    "bsm levels decreasing": _bsm(levels=(2.0, 1.0, 0.5)),
    "bsm levels start at 0": _bsm(levels=(0.0, 1.0, 2.0)),
    "bsm levels repeated": _bsm(levels=(0.5, 0.5, 1.0)),
    "bsm one level": _bsm(levels=(1.0,)),
    "bsm no levels": _bsm(levels=()),
    "bsm levels a string": _bsm(levels="0.5,1.0"),
    "bsm levels nested": _bsm(levels=[[0.5, 1.0]]),
    "bsm levels nan": _bsm(levels=(0.5, math.nan)),
    "bsm levels 2-D tensor": _bsm(levels=torch.ones(2, 2)),
    "bsm mix above 1": _bsm(mix=1.5),
    "bsm mix negative": _bsm(mix=-0.1),
    "bsm mix bool": _bsm(mix=True),
    "bsm mix nan": _bsm(mix=math.nan),
    "bsm sigma_burn negative": _bsm(sigma_burn=-0.5),
    "bsm sigma_burn string": _bsm(sigma_burn="0.5"),
    "bsm weighting unknown": _bsm(weighting="uniform"),
    "bsm generator wrong type": _bsm(generator="cpu"),
    "bsm sigma_data negative": _bsm(sigma_data=-0.5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_training_input_is_refused(name: str) -> None:
    rejected(CASES[name])


def test_the_refused_teacher_message_says_why() -> None:
    message = str(rejected(_bsm(teacher=G)))
    assert "collapse" in message or "Gaussian's score" in message
    assert "EMA" in message


@given(mix=st.floats(0.0, 1.0), sigma_burn=st.floats(0.0, 1e6), seed=st.integers(0, 2**31 - 1))
def test_accepted_values_give_a_finite_loss(mix: float, sigma_burn: float, seed: int) -> None:
    finite_or_rejected(_bsm(mix=mix, sigma_burn=sigma_burn, generator=torch.Generator().manual_seed(seed)))
    out = _bsm(mix=mix, sigma_burn=sigma_burn, generator=torch.Generator().manual_seed(seed))()
    assert bool(torch.isfinite(out))
