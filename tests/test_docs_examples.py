"""The code examples in README.md and docs/extending.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_usage_example(capsys) -> None:  # type: ignore[no-untyped-def]
    (block,) = _python_blocks(ROOT / "README.md")
    namespace: dict[str, object] = {}
    exec(
        compile(
            block.replace('"heun")', '"heun", disable=True)').replace(
                "sigma_skip=10.0)", "sigma_skip=10.0, disable=True)"
            ),
            "README.md",
            "exec",
        ),
        namespace,
    )
    assert capsys.readouterr().out.split() == ["23", "17"]
    plain, warm = namespace["plain"], namespace["warm"]
    assert warm.nfe < plain.nfe and torch.isfinite(warm.x).all()  # type: ignore[attr-defined]


def test_extending_example_passes_the_solver_suite() -> None:
    from gaussport.solvers import base
    from gaussport.testing import check_solver

    block = _python_blocks(ROOT / "docs" / "extending.md")[0]
    # Run the documented file without registering it globally (other tests enumerate the registry).
    source = block.replace("from .base import", "from gaussport.solvers.base import").replace(
        "from .registry import register\n", "register = lambda name: (lambda cls: cls)\n"
    )
    namespace: dict[str, object] = {"base": base}
    exec(compile(source, "docs/extending.md", "exec"), namespace)
    check_solver(namespace["MidpointLog"]())  # type: ignore[operator]
