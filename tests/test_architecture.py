"""The layers of docs/architecture.md, enforced on the import graph of src/.

The tables of docs/architecture.md are the rules: this test parses them, walks every module's
imports with ``ast`` (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not), and
fails on an import of a higher layer, on an edge the "must not import" table forbids, or on an
import cycle between modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


# ----------------------------------------------------------------------------- the rules
def _table(section: str) -> list[list[str]]:
    """The rows (cells) of the first table under the ``## section`` heading of the page."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"docs/architecture.md has no section '## {section}'"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def _modules(cell: str) -> list[str]:
    return re.findall(r"`(gaussport(?:\.[\w.]+)?)`", cell)


def layers() -> dict[str, int]:
    out = {}
    for cells in _table("The layers"):
        level = int(cells[0].split()[0])
        for name in _modules(cells[1]):
            out[name] = level
    return out


def forbidden() -> list[tuple[str, str]]:
    return [
        (src, dst)
        for cells in _table("Rules beyond the layers")
        for src in _modules(cells[0])
        for dst in _modules(cells[1])
    ]


def exemptions() -> set[tuple[str, str]]:
    rows = re.findall(r"^\| `(gaussport[\w.]*)` -> `(gaussport[\w.]*)` \|", DOC.read_text(), flags=re.M)
    return set(rows)


# ----------------------------------------------------------------------------- the import graph
def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "gaussport").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> {gaussport modules it imports}``, each target resolved to the most specific module."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # "from pkg import name" imports the submodule pkg.name when there is one.
                candidates = [
                    f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                    for alias in node.names
                ]
            targets |= {c for c in candidates if c == "gaussport" or c.startswith("gaussport.")}
        graph[name] = {t for t in targets if t != name}
    return graph


def layer_of(module: str, table: dict[str, int]) -> int | None:
    best = None
    for prefix, level in table.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, level)
    return None if best is None else best[1]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(graph: dict[str, set[str]], table: dict[str, int], rules: list[tuple[str, str]]) -> list[str]:
    out = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            if (src, dst) in exemptions():
                continue
            ls, ld = layer_of(src, table), layer_of(dst, table)
            if ls is not None and ld is not None and ld > ls:
                out.append(f"{src} (layer {ls}) imports {dst} (layer {ld})")
            for a, b in rules:
                if within(src, a) and within(dst, b):
                    out.append(f"{src} imports {dst}: docs/architecture.md forbids {a} -> {b}")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


# ----------------------------------------------------------------------------- the tests
def test_every_module_has_a_layer() -> None:
    table = layers()
    missing = [m for m in all_modules() if layer_of(m, table) is None]
    assert not missing, f"modules without a layer in docs/architecture.md: {missing}"


def test_no_module_imports_a_higher_layer_or_a_forbidden_module() -> None:
    found = violations(edges(all_modules()), layers(), forbidden())
    assert not found, "import rules of docs/architecture.md broken:\n" + "\n".join(found)


def test_no_import_cycles() -> None:
    graph = edges(all_modules())
    for a, b in exemptions():
        graph[a].discard(b)
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_finds_what_it_must() -> None:
    # The checker itself: an upward import, a forbidden edge and a cycle in a made-up graph.
    table = {"gaussport.loop": 0, "gaussport.solvers": 1, "gaussport.analytic": 1, "gaussport.digits": 4}
    graph = {
        "gaussport.loop": {"gaussport.digits.unet"},
        "gaussport.solvers.heun": {"gaussport.analytic"},
        "gaussport.analytic.a": {"gaussport.analytic.b"},
        "gaussport.analytic.b": {"gaussport.analytic.a"},
    }
    found = violations(graph, table, [("gaussport.solvers", "gaussport.analytic")])
    assert any("layer 0) imports gaussport.digits.unet (layer 4)" in f for f in found)
    assert any("forbids gaussport.solvers -> gaussport.analytic" in f for f in found)
    assert cycles(graph) == [["gaussport.analytic.a", "gaussport.analytic.b"]]
    # Imports under TYPE_CHECKING are not edges; imports inside functions are.
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gaussport.digits\n"
        "def f():\n    import gaussport.analytic\n"
    )
    assert [n.names[0].name for n in _imports(tree) if isinstance(n, ast.Import)] == ["gaussport.analytic"]
