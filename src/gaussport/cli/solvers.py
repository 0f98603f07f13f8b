"""``gaussport solvers``: the registered solvers with order, cost per step and reference."""

from __future__ import annotations

import argparse
import inspect
import textwrap
from typing import Any

from ._common import check_nothing

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    from .. import solvers

    names = solvers.available()
    intro = (
        f"{len(names)} registered solvers (gaussport.solve(..., solver=NAME)). order: the global "
        "convergence order with exact history, and from a cold start (empty history: what gaussport.solve "
        "does) where that is lower; cost: denoiser evaluations (NFE) per step. docs/solvers.md compares them."
    )
    print(textwrap.fill(intro, width=106))
    for name in names:
        print()
        print("\n".join(_solver_card(name)))
    return 0


def _solver_card(name: str) -> list[str]:
    """What ``gaussport solvers`` prints for ``name``, all read from the registry and the solver.

    The order and cost come from the solver object (``order``, ``cold_start_order``,
    ``evaluations``), the line that tells this name from the others from the registry
    (:func:`gaussport.solvers.summary`) with the preset options, the reference from the class
    docstring's ``References:`` section.
    """
    from .. import solvers

    cls, preset = solvers.solver_class(name)
    solver = solvers.get(name)
    order, cold = solver.order, solver.cold_start_order
    per_step, last = solver.evaluations((2.0, 1.0)), solver.evaluations((2.0, 0.0))
    cost = f"{per_step} evaluation{'s' if per_step != 1 else ''} per step"
    if last != per_step:
        cost += f" ({last} on a final step to sigma = 0)"
    head = f"order {order}" + (f" ({cold} from a cold start)" if cold != order else "")
    wrap = textwrap.TextWrapper(width=106, initial_indent="    ", subsequent_indent="      ")
    lines = [f"{name:<18}{head}, {cost}" + ("; inverts (gaussport.invert)" if cls.supports_inversion else "")]
    options = ", ".join(f"{k}={v!r}" for k, v in preset.items())
    lines += wrap.wrap(solvers.summary(name) + (f" [{cls.__qualname__}({options})]" if options else ""))
    reference = _first_reference(inspect.getdoc(cls) or "")
    if reference:
        lines += wrap.wrap(f"reference: {reference}")
    return lines


def _first_reference(doc: str) -> str:
    """The first work the docstring's ``References:`` section cites (up to its first ``;``)."""
    _, found, rest = doc.partition("References:\n")
    if not found:
        return ""
    text = " ".join(rest.split("\n\n")[0].replace("``", "").split())
    depth = 0
    for k, ch in enumerate(text):  # the first ";" outside parentheses ends the first work
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth == 0:
            text = text[:k]
            break
    return text.strip().rstrip(".")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``gaussport solvers`` (no flags of its own)."""
    lst = subparsers.add_parser("solvers", help="list the registered solvers")
    lst.set_defaults(func=run, check=check_nothing)
    return lst
