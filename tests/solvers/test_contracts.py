"""The shared solver contract, run over every registered solver (gaussport.testing)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from typing import NamedTuple

import pytest
import torch

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


# ---------------------------------------------------------------------------- the class docstring
# Solver docstrings are Google style: a summary, prose, one paragraph stating the order, the cost and
# the state -- labelled ("Order: ... Cost: ... State: ...") or compact ("Order 2; 2 denoiser
# evaluations per step; stateless.") -- then the sections "Args:" and "References:".
_SECTION = re.compile(r"^([A-Z]\w*):\n((?:(?:[ \t]+\S.*)?\n?)+)", re.M)
_CODE = re.compile(r"``(.+?)``|:\w+:`[^`]+`")
_LITERAL = re.compile(r"(?<![\w.^])\d+(?![\w^]|\.\d)")
# A paper: authors ("Name et al.", "Name & Name", "Name, ..."), a quoted title, then a year or an arXiv id.
_PAPER = re.compile(
    r'[A-Z][\w-]+(?: et al\.| &| and|,)[^"]*"[^"]{3,}"[^.]*?(?:(?:19|20)\d\d|arXiv \d{4}\.\d{4,5})'
)


def docstring_parts(doc: str) -> dict[str, str]:
    """The parts of a solver class docstring: its sections by name ("Args", "References", ...) and the
    "Order", "Cost" and "State" statements, each as one line of text."""
    text = inspect.cleandoc(doc) + "\n"
    parts = {m.group(1): textwrap.dedent(m.group(2)).strip() for m in _SECTION.finditer(text)}
    body = _SECTION.split(text)[0]
    stated = [p for p in body.split("\n\n") if p.startswith("Order")]
    assert len(stated) == 1, "one paragraph of the docstring must start with 'Order'"
    flat = " ".join(stated[0].split())
    if flat.startswith("Order:"):  # labelled
        pieces = re.split(r"\b(Order|Cost|State): ", flat)[1:]
        parts.update({pieces[k]: pieces[k + 1].strip() for k in range(0, len(pieces), 2)})
    else:  # compact: "Order 2; <cost>; <state>."
        order, cost, state = (piece.strip() for piece in flat[len("Order") :].split(";", 2))
        parts.update({"Order": order, "Cost": cost, "State": state})
    return parts


def _value(node: ast.AST, options: dict[str, object]) -> int:
    """An order expression over the solver's options: integers, option names, + - *, min and max."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and type(options.get(node.id)) is int:
        return options[node.id]  # type: ignore[return-value]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        a, b = _value(node.left, options), _value(node.right, options)
        return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
        return (min if node.func.id == "min" else max)(_value(a, options) for a in node.args)
    raise ValueError("not an order expression")


class Stated(NamedTuple):
    """What an Order statement says for one configuration of a solver."""

    names: set[int]  # orders named outside the cold-start clause
    cold: set[int] | None  # orders of the cold-start clause (None: there is none)
    cold_caps: bool  # the clause says "caps ... at n": a cold start has min(order, n)
    exact: int | None  # the value of a code span ``self.order = <expression>``


def stated_orders(statement: str, options: dict[str, object]) -> Stated:
    """Read an Order statement for the configuration ``options``: integer literals of the prose and
    code spans that evaluate over the options (``solver_order + 1``), clause by clause (``;``)."""
    names, cold, cold_caps, exact = set(), None, False, None
    for clause in statement.split(";"):
        values = {int(v) for v in _LITERAL.findall(_CODE.sub(" ", clause))}
        for span in filter(None, (m.group(1) for m in _CODE.finditer(clause))):
            try:
                tree = ast.parse(span.strip())
            except SyntaxError:
                continue
            stmt = tree.body[0] if len(tree.body) == 1 else None
            try:
                if isinstance(stmt, ast.Assign) and ast.unparse(stmt.targets[0]) == "self.order":
                    exact = _value(stmt.value, options)
                elif isinstance(stmt, ast.Expr):
                    values.add(_value(stmt.value, options))
            except ValueError:
                continue
        if "cold start" in clause:
            cold, cold_caps = values, "caps" in clause
        else:
            names |= values
    return Stated(names, cold, cold_caps, exact)


def test_docstring_states_order_cost_state_and_reference(solver_name: str) -> None:
    solver = gaussport.solvers.get(solver_name)
    cls = type(solver)
    options = {f.name: getattr(solver, f.name) for f in dataclasses.fields(solver)}
    parts = docstring_parts(cls.__doc__ or "")
    missing = {"Order", "Cost", "State", "References"} - set(parts)
    assert not missing, f"{cls.__name__} docstring does not state {sorted(missing)}"

    # Order: the declared orders are the ones the docstring states for this configuration.
    stated = stated_orders(parts["Order"], options)
    order, cold_order = solver.order, solver.cold_start_order
    if stated.exact is not None:
        assert stated.exact == order, f"{cls.__name__} states order {stated.exact}, solver.order is {order}"
    assert order in stated.names | {stated.exact}, f"{cls.__name__} names orders {stated.names}, not {order}"
    if stated.cold is None:  # no cold-start clause: a cold start has the order itself
        assert cold_order == order, f"{cls.__name__}: cold_start_order {cold_order} is not stated"
    else:
        allowed = {min(order, v) for v in stated.cold} if stated.cold_caps else stated.cold
        assert cold_order in allowed, f"{cls.__name__}: cold start {parts['Order']!r}, declared {cold_order}"

    # Cost: "k (denoiser) evaluations per step", the step to 0 as stated (default: the same k).
    per_step = re.search(r"(\d+) (?:denoiser )?evaluations? per step", parts["Cost"])
    assert per_step, f"{cls.__name__}: Cost does not state the evaluations per step"
    k = int(per_step.group(1))
    to_zero = re.search(r"\((\d+) on a final step to 0", parts["Cost"])
    last = int(to_zero.group(1)) if to_zero else k
    for n in (1, 2, 5):
        above = tuple(10.0 * 0.5**j for j in range(n + 1))
        assert solver.evaluations(above) == k * n, (cls.__name__, n)
        assert solver.evaluations(above[:-1] + (0.0,)) == k * (n - 1) + last, (cls.__name__, n)

    # State: "stateless", or the class of what init returns.
    state = solver.init(torch.zeros(2, 3, dtype=torch.float64), (10.0, 5.0, 1.0))
    if "stateless" in parts["State"]:
        assert state is None, f"{cls.__name__} says stateless but init returns {type(state).__name__}"
    else:
        named = re.search(r":class:`~?(?:[\w.]+\.)?(\w+)`", parts["State"])
        assert named and named.group(1) == type(state).__name__, (cls.__name__, parts["State"])

    # Args: exactly the solver's options; References: at least one paper (authors, "title", year).
    documented = set(re.findall(r"^(\w+):", parts.get("Args", ""), re.M))
    assert documented == set(options), f"{cls.__name__}: Args {documented} != options {set(options)}"
    assert _PAPER.search(" ".join(parts.get("References", "").split())), f"{cls.__name__}: no paper cited"


def test_docstring_parser_reads_what_it_must() -> None:
    # The parser is checked on known text, so the test above cannot pass by reading nothing.
    doc = """Summary.

    Order: ``solver_order + 1`` with exact history; a cold start caps it at 2. Cost: 1 evaluation
    per step. State: :class:`History`.

    Args:
        solver_order: the order.

    References:
        Doe et al., "A Title", NeurIPS 2020.
    """
    parts = docstring_parts(doc)
    assert parts["Order"].startswith("``solver_order + 1``") and parts["Cost"] == "1 evaluation per step."
    assert parts["State"] == ":class:`History`." and parts["Args"] == "solver_order: the order."
    assert stated_orders(parts["Order"], {"solver_order": 3}) == ({4}, {2}, True, None)
    compact = docstring_parts("Summary.\n\nOrder 2; 2 denoiser evaluations per step; stateless.\n")
    assert (compact["Order"], compact["State"]) == ("2", "stateless.")
    exact = stated_orders("``self.order = min(solver_order, 2)``, local ``O(h^2)``", {"solver_order": 3})
    assert exact == (set(), None, False, 2)
    assert stated_orders("2, 1.5 or 3.", {}).names == {2, 3}
    assert _PAPER.search(parts["References"]) and not _PAPER.search("thu-ml/DPM-Solver-v3 (MIT)")


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
    gaussport.solvers.register("_euler_named", summary="Euler, registered again with a summary")(cls)
    try:
        assert "_euler_copy" in gaussport.solvers.available()
        assert isinstance(gaussport.solvers.get("_euler_copy"), cls)
        # Without a registered summary: the first line of the class docstring.
        assert gaussport.solvers.summary("_euler_copy") == cls.__doc__.strip().splitlines()[0]
        assert gaussport.solvers.summary("_euler_named") == "Euler, registered again with a summary"
    finally:
        gaussport.solvers.unregister("_euler_copy")
        gaussport.solvers.unregister("_euler_named")
    assert "_euler_copy" not in gaussport.solvers.available()
    with pytest.raises(ValueError, match="unknown solver"):
        gaussport.solvers.summary("_euler_named")
    with pytest.raises(ValueError, match="unknown solver"):
        gaussport.solvers.unregister("_euler_copy")
