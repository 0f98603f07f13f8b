"""Bad input, category "solver options": every field of every registered solver, from its declared type.

The cases are generated from the registry and the dataclass fields (``dataclasses.fields`` and the
resolved annotations), so a new solver file is covered with no test code of its own. For each field:

* values of the wrong type or a refused value for the declared type -- strings such as ``'False'``,
  bools for ints and floats, floats for ints, NaN/inf, values outside a ``Literal``, ``None`` where
  the type is not optional, tensors, lists -- must be refused when the solver is built, through
  :func:`gaussport.solvers.get` and the class itself (:func:`_rules.rejected`), with a message
  naming the solver, the option and the value;
* valid values (the default, each ``Literal`` choice, ``None`` where optional, NumPy scalars for
  numbers) must build, and values outside a solver's range must build or be refused -- and a
  solver that builds must run (a finite result or an allowed error, :func:`_rules.finite_or_rejected`).

Plus the examples of issue 12 item 6 as named regressions, and the mechanism itself: a solver
defined in a test (registered, or not, with or without its own ``__post_init__``) is checked too.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

import numpy as np
import pytest
import torch
from _rules import finite_or_rejected, rejected

import gaussport
from gaussport.analytic import Gaussian
from gaussport.ems import EMS
from gaussport.solvers import SingleEvaluationSolver, get, register, solver_class, unregister

_MISSING = object()


def _declared() -> list[tuple[str, str, Any, Any]]:
    """``(solver name, field, declared type, preset or default value)`` for every registered solver."""
    out = []
    for name in gaussport.solvers.available():
        cls, preset = solver_class(name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                default = preset.get(f.name, f.default)
                out.append((name, f.name, hints[f.name], default))
    return out


def _members(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    return list(typing.get_args(tp)) if origin in (Union, types.UnionType) else [tp]


def _accepts(tp: Any) -> set[str]:
    """The kinds a declared type accepts: 'bool', 'int', 'float', 'str', 'none', 'literal', 'class'."""
    kinds = set()
    for m in _members(tp):
        if m is type(None):
            kinds.add("none")
        elif typing.get_origin(m) is Literal:
            kinds.add("literal")
        elif m in (bool, int, float, str):
            kinds.add(m.__name__)
        else:
            kinds.add("class")
    return kinds


def _literal_choices(tp: Any) -> list[Any]:
    return [c for m in _members(tp) if typing.get_origin(m) is Literal for c in typing.get_args(m)]


def bad_values(tp: Any) -> list[tuple[str, Any]]:
    """Values the declared type refuses, each with a label (the test id)."""
    kinds = _accepts(tp)
    choices = _literal_choices(tp)
    candidates: list[tuple[str, Any]] = [
        ("str-False", "False"),
        ("str-2", "2"),
        ("str-nan", "nan"),
        ("bool-True", True),
        ("bool-False", False),
        ("float-2.0", 2.0),
        ("float-0.5", 0.5),
        ("nan", math.nan),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("None", None),
        ("tensor-1", torch.tensor(1)),
        ("tensor-0.5", torch.tensor(0.5)),
        ("tensor-True", torch.tensor(True)),
        ("np-bool", np.bool_(True)),
        ("list", [1]),
        ("bytes", b"False"),
        ("complex", 1j),
    ]
    if choices:
        first = choices[0]
        candidates += [("not-a-choice", "bogus"), ("wrong-case", str(first).upper() + "_")]
    out = []
    for label, value in candidates:
        if isinstance(value, bool):
            ok = "bool" in kinds
        elif isinstance(value, str):
            ok = "str" in kinds or value in choices
        elif isinstance(value, float):
            ok = "float" in kinds and math.isfinite(value)
        elif value is None:
            ok = "none" in kinds
        else:  # tensors, NumPy bools, lists, bytes, complex numbers: no declared type takes them
            ok = False
        if not ok:
            out.append((label, value))
    return out


def good_values(tp: Any, default: Any) -> list[tuple[str, Any]]:
    """Values the declared type takes (a solver may still refuse some by its range rules)."""
    kinds = _accepts(tp)
    out: list[tuple[str, Any]] = []
    if default is not dataclasses.MISSING:
        out.append(("default", default))
    out += [(f"choice-{c}", c) for c in _literal_choices(tp)]
    if "none" in kinds:
        out.append(("None", None))
    if "bool" in kinds:
        out += [("True", True), ("False", False)]
    if "int" in kinds:
        out += [("int-1", 1), ("np-int64-2", np.int64(2)), ("int-0", 0), ("int-big", 10**4)]
    if "float" in kinds:
        out += [("float-0.5", 0.5), ("np-float32", np.float32(0.25)), ("int-1", 1), ("float-0", 0.0)]
        out += [("float-neg", -1.0), ("float-huge", 1e300)]
    if "class" in kinds and any(m is EMS for m in _members(tp)):
        out.append(("EMS", EMS.degenerate((1,), sigma_min=0.01, sigma_max=10.0)))
    return out


DECLARED = _declared()
BAD = [
    pytest.param(name, field, value, id=f"{name}-{field}-{label}")
    for name, field, tp, _ in DECLARED
    for label, value in bad_values(tp)
]
GOOD = [
    pytest.param(name, field, value, id=f"{name}-{field}-{label}")
    for name, field, tp, default in DECLARED
    for label, value in good_values(tp, default)
]


def _shown(value: Any) -> str:
    return repr(value)[:20]


@pytest.mark.parametrize(("name", "field", "value"), BAD)
def test_a_value_of_the_wrong_type_is_refused_when_the_solver_is_built(
    name: str, field: str, value: Any
) -> None:
    exc = rejected(lambda: get(name, **{field: value}))
    message = str(exc)
    assert repr(name) in message and field in message and _shown(value) in message, message
    cls, preset = solver_class(name)
    rejected(lambda: cls(**{**preset, field: value}))  # the class itself, not only the registry
    rejected(lambda: gaussport.solve(_GAUSSIAN, _X, (5.0, 1.0, 0.0), name, disable=True, **{field: value}))


_GAUSSIAN = Gaussian(torch.tensor([0.5, -0.25]), torch.eye(2) * 0.5)
_X = torch.randn(2, 2, generator=torch.Generator().manual_seed(0)) * 5.0


@pytest.mark.parametrize(("name", "field", "value"), GOOD)
def test_a_value_of_the_declared_type_builds_or_is_refused_by_range_and_runs(
    name: str, field: str, value: Any
) -> None:
    try:
        solver = get(name, **{field: value})
    except ValueError as exc:  # a range rule of the solver (never a TypeError for a declared type)
        assert field in str(exc) and repr(name) in str(exc), exc
        return
    stored = getattr(solver, field)
    assert stored == value or (isinstance(value, float) and stored == pytest.approx(value))
    if isinstance(value, (np.integer, np.floating)):
        assert type(stored) in (int, float)  # stored as the plain Python number
    finite_or_rejected(lambda: gaussport.solve(_GAUSSIAN, _X, (5.0, 1.0, 0.2, 0.0), solver, disable=True))
    finite_or_rejected(
        lambda: gaussport.sample(
            _GAUSSIAN, _X, (5.0, 1.0, 0.2, 0.0), solver, warm_start=_GAUSSIAN, sigma_skip=2.0
        )
    )


def test_every_option_has_a_checkable_declared_type() -> None:
    """``Any`` (or an annotation the check cannot read) would let every value through: none is."""
    for name, field, tp, _ in DECLARED:
        assert tp is not Any and all(m is not Any for m in _members(tp)), f"{name}.{field}: {tp}"
        assert bad_values(tp), f"{name}.{field}: no generated bad value"


def test_case_counts() -> None:
    """The generated cases cover every field of every registered solver (the counts in the report)."""
    fields = {(name, field) for name, field, _, _ in DECLARED}
    assert {(p.values[0], p.values[1]) for p in BAD} == fields
    assert {(p.values[0], p.values[1]) for p in GOOD} == fields
    assert len(BAD) >= 8 * len(fields)


# ----------------------------------------------------------------------------- issue 12 item 6
@pytest.mark.parametrize(
    ("name", "options", "error", "words"),
    [
        ("dpmpp_2m", {"solver_order": 2.0}, TypeError, "solver_order must be an int; got 2.0"),
        ("dpmpp_3m", {"solver_order": 2.0}, TypeError, "solver_order must be an int; got 2.0"),
        ("unipc_bh1", {"solver_order": 2.0}, TypeError, "solver_order must be an int; got 2.0"),
        ("ipndm", {"adams_bashforth": 2.0}, TypeError, "adams_bashforth must be an int; got 2.0"),
        ("dpm_solver_v3", {"ems_intervals": True}, TypeError, "ems_intervals must be an int; got True"),
        ("dpmpp_2m", {"lower_order_final": "False"}, TypeError, "lower_order_final must be True or False"),
        ("ipndm", {"seed_history": "False"}, TypeError, "seed_history must be True or False"),
        ("unipc_bh1", {"corrector": "False"}, TypeError, "corrector must be True or False; got 'False'"),
        ("ipndm_v", {"variable_step": "False"}, TypeError, "variable_step must be True or False"),
        ("dpmpp_2m", {"solver_order": True}, TypeError, "solver_order must be an int; got True"),
        ("dpmpp_2s", {"r": True}, TypeError, "r must be a finite float; got True"),
        ("dpm_solver_v3", {"half": math.nan}, ValueError, "half must be a finite float or None; got nan"),
    ],
)
def test_issue_12_item_6_examples_fail_at_construction(
    name: str, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=f"solver '{name}'") as info:
        get(name, **options)
    assert words in str(info.value)


def test_a_v3_ems_intervals_bool_no_longer_fails_at_run_time() -> None:
    g = Gaussian(torch.zeros(2), torch.eye(2))
    with pytest.raises(TypeError, match="ems_intervals must be an int"):
        gaussport.sample(
            g, _X, (5.0, 1.0, 0.0), "dpm_solver_v3", warm_start=g, sigma_skip=5.0, ems_intervals=True
        )


# ----------------------------------------------------------------------------- the mechanism
@dataclass(frozen=True, slots=True)
class _Plain(SingleEvaluationSolver[None]):
    """A solver with no validation code of its own (a new file would look like this)."""

    steps: int = 2
    damping: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    limit: float | None = None

    @property
    def order(self) -> int:
        return 1

    def advance(self, x: torch.Tensor, denoised: torch.Tensor, sigmas: Any, i: int, state: None) -> Any:
        return denoised + (x - denoised) * (sigmas[i + 1] / sigmas[i]), None


@dataclass(frozen=True, slots=True)
class _OwnPostInit(_Plain):
    """A subclass whose own ``__post_init__`` (a range rule) does not call anything else."""

    extra: int = 1
    seen: ClassVar[list[int]] = []

    def __post_init__(self) -> None:
        type(self).seen.append(self.extra)
        if self.extra < 0:
            raise ValueError(f"extra must be >= 0; got {self.extra}.")


@pytest.mark.parametrize("cls", [_Plain, _OwnPostInit])
def test_a_new_solver_is_checked_with_no_code_of_its_own(cls: type) -> None:
    register("_test_new_solver")(cls)
    try:
        bad = [("steps", 2.0), ("steps", True), ("flag", "False"), ("damping", math.inf), ("mode", "c")]
        for options in [{field: value} for field, value in bad] + [
            {"limit": "1"},
            {"limit": torch.tensor(1.0)},
        ]:
            rejected(lambda options=options: get("_test_new_solver", **options))
            rejected(lambda options=options: cls(**options))
        built = get("_test_new_solver", steps=np.int64(3), damping=1, limit=None)
        assert type(built.steps) is int and type(built.damping) is float
        out = gaussport.solve(_GAUSSIAN, _X, (5.0, 1.0, 0.0), built, disable=True)
        assert torch.isfinite(out.x).all()
    finally:
        unregister("_test_new_solver")
    if cls is _OwnPostInit:
        _OwnPostInit.seen.clear()
        rejected(lambda: _OwnPostInit(extra=-1))  # its own rule still runs ...
        rejected(lambda: _OwnPostInit(extra=1.5))  # ... after the type check, which it cannot hide
        assert _OwnPostInit.seen == [-1]
