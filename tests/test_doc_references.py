"""The documentation stands alone: every reference to it resolves, and nothing points outside it.

* ``docs/<page>.md`` and ``docs/<page>.md#<anchor>`` written anywhere in src/, tests/, benchmarks/,
  docs/ or README.md (docstrings, comments, generated reports) name an existing page and, with an
  anchor, an existing heading of that page;
* markdown links between docs pages (``[text](page.md#anchor)``, ``[text](#anchor)``) resolve to an
  existing page and heading -- ``mkdocs build --strict`` checks the pages but not the anchors;
* no file mentions the background notes the derivations were once kept in (:data:`NOTES`): what
  the code relies on is derived in docs/.

Anchors are computed as mkdocs computes them: each page is rendered with Python-Markdown's ``toc``
extension (the ``markdown_extensions`` of mkdocs.yml), whose slugs lower-case the heading text, drop
punctuation, join words with hyphens and number repeated headings ``_1``, ``_2``. On the API pages
an anchor may also be an object documented there by mkdocstrings (``::: gaussport.x`` gives
``#gaussport.x`` and ``#gaussport.x.<member>``).
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

markdown = pytest.importorskip("markdown")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SELF = Path(__file__).resolve()

# Where references are looked for, and which files (by suffix) count.
SCANNED = ("src", "tests", "benchmarks", "docs", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".json", ".txt", ".yml", ".yaml", ".toml", ".cfg"}

# docs/<path>.md with an optional #anchor; not preceded by a path character (so "mkdocs/x.md" and
# "src/docs/x.md" are not references to this repository's docs/).
REFERENCE = re.compile(r"(?<![\w/.-])docs/((?:[\w-]+/)*[\w.-]+?\.md)(?:#([\w.-]+))?")
# The background notes (not in the repository) and numbered sections of any page.
NOTES = re.compile(r"\b(?:method|ecosystem|style|bsm)\.md\b|\.md §|\bnotes §|project notes|method notes")
HREF = re.compile(r'<a\s[^>]*?href="([^"]+)"')
MKDOCSTRINGS = re.compile(r"^:::\s*([\w.]+)", re.MULTILINE)


def _extensions() -> list[str]:
    """The markdown extensions mkdocs uses (mkdocs.yml), as far as they are installed."""
    names = ["toc", "tables"]
    try:
        import yaml

        config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
        for entry in config.get("markdown_extensions", []):
            names.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    except Exception:  # noqa: BLE001 -- no yaml or an unusual config: the defaults still slug headings
        pass
    usable: list[str] = []
    for name in dict.fromkeys(names):
        try:
            markdown.Markdown(extensions=[name])
        except Exception:  # noqa: BLE001 -- not installed here; headings do not depend on it
            continue
        usable.append(name)
    if "pymdownx.superfences" not in usable:
        usable.append("fenced_code")  # so that "# comments" in code blocks are not headings
    return usable


@dataclass(frozen=True)
class Page:
    """A rendered docs page: its heading anchors, mkdocstrings objects and link targets."""

    anchors: frozenset[str]
    objects: tuple[str, ...]
    hrefs: tuple[str, ...]

    def has_anchor(self, anchor: str) -> bool:
        return anchor in self.anchors or any(
            anchor == obj or anchor.startswith(obj + ".") for obj in self.objects
        )


def render(text: str) -> Page:
    """Anchors (as mkdocs' toc extension slugs them) and link targets of one markdown page."""
    md = markdown.Markdown(extensions=_extensions())
    html = md.convert(text)
    anchors: set[str] = set()

    def walk(tokens: list[dict]) -> None:
        for token in tokens:
            anchors.add(token["id"])
            walk(token["children"])

    walk(md.toc_tokens)
    anchors.update(re.findall(r'\sid="([^"]+)"', html))
    return Page(frozenset(anchors), tuple(MKDOCSTRINGS.findall(text)), tuple(HREF.findall(html)))


Lookup = Callable[[str], "Page | None"]


@functools.cache
def page(relative: str) -> Page | None:
    """The rendered page ``docs/<relative>``, or None if it does not exist."""
    path = DOCS / relative
    return render(path.read_text(encoding="utf-8")) if path.is_file() else None


def unresolved_references(text: str, lookup: Lookup = page) -> list[tuple[int, str, str]]:
    """``(line, reference, why)`` for each ``docs/<page>.md[#anchor]`` in ``text`` that does not resolve."""
    bad = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in REFERENCE.finditer(line):
            target, anchor = match.group(1), (match.group(2) or "").rstrip(".")
            found = lookup(target)
            if found is None:
                bad.append((number, match.group(0), "no such page"))
            elif anchor and not found.has_anchor(anchor):
                bad.append((number, match.group(0), "no such heading"))
    return bad


def unresolved_links(
    relative: str, text: str, rendered: Page, lookup: Lookup = page
) -> list[tuple[int, str, str]]:
    """``(line, link, why)`` for each link of the page ``docs/<relative>`` to a missing page or anchor."""
    bad = []
    for href in rendered.hrefs:
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):  # http:, https:, mailto: ...
            continue
        target, _, anchor = href.partition("#")
        if target and not target.endswith(".md"):
            continue  # images and other files: mkdocs --strict checks those
        if target:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
            found = lookup(resolved)
        else:
            resolved, found = relative, rendered
        if found is None:
            why = "no such page"
        elif anchor and not found.has_anchor(anchor):
            why = "no such heading"
        else:
            continue
        number = next((i for i, line in enumerate(text.splitlines(), 1) if f"]({href}" in line), 0)
        bad.append((number, href, f"{why} ({resolved})"))
    return bad


def notes_mentions(text: str) -> list[tuple[int, str]]:
    """``(line, text)`` for each mention of the background notes."""
    return [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1) for m in NOTES.finditer(line)]


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        files += [p for p in candidates if p.is_file() and p.suffix in TEXT_SUFFIXES and p.resolve() != SELF]
    return files


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _report(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what}:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------- the checks
def test_docs_references_resolve() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {ref} ({why})"
        for path in scanned_files()
        for line, ref, why in unresolved_references(_read(path))
    ]
    assert not problems, _report(problems, "references to docs/ that do not resolve")


def test_links_between_docs_pages_resolve() -> None:
    problems = []
    for path in sorted(DOCS.rglob("*.md")):
        relative = path.relative_to(DOCS).as_posix()
        text = _read(path)
        for line, href, why in unresolved_links(relative, text, page(relative)):
            problems.append(f"docs/{relative}:{line}: ({href}) {why}")
    assert not problems, _report(problems, "links between docs pages that do not resolve")


def test_no_references_to_notes_outside_the_repository() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {found!r}"
        for path in scanned_files()
        for line, found in notes_mentions(_read(path))
    ]
    assert not problems, _report(problems, "mentions of notes that are not in the repository")


# ----------------------------------------------------------------------- the checker can fail
FAKE_PAGE = """# A page

## Runs that start mid-way

## `lower_order_final` in the references

## Runs that start mid-way

See [there](#no-such-heading), [here](#runs-that-start-mid-way), [other](other.md#missing),
[fine](other.md#a-heading), [gone](gone.md) and [web](https://example.org/x.md#y).

```python
# not a heading
```

::: gaussport.ems
"""


def _fake_lookup(relative: str) -> Page | None:
    pages = {"fake.md": FAKE_PAGE, "other.md": "# Other\n\n## A heading\n"}
    return render(pages[relative]) if relative in pages else None


def test_anchors_are_mkdocs_slugs() -> None:
    fake = render(FAKE_PAGE)
    assert {"a-page", "runs-that-start-mid-way", "runs-that-start-mid-way_1"} <= fake.anchors
    assert "lower_order_final-in-the-references" in fake.anchors
    assert "not-a-heading" not in fake.anchors
    assert fake.has_anchor("gaussport.ems.EMS") and not fake.has_anchor("gaussport.emsx")


def test_reference_checker_finds_what_does_not_resolve() -> None:
    text = (
        "ok docs/fake.md and docs/fake.md#runs-that-start-mid-way_1.\n"
        "bad (docs/fake.md#no-such-heading) and docs/missing.md#x\n"
        "not ours: mkdocs/fake.md#x src/docs/fake.md#y\n"
    )
    bad = unresolved_references(text, lookup=_fake_lookup)
    assert bad == [
        (2, "docs/fake.md#no-such-heading", "no such heading"),
        (2, "docs/missing.md#x", "no such page"),
    ]


def test_link_checker_finds_what_does_not_resolve() -> None:
    bad = unresolved_links("fake.md", FAKE_PAGE, render(FAKE_PAGE), lookup=_fake_lookup)
    assert [(line, href) for line, href, _ in bad] == [
        (9, "#no-such-heading"),
        (9, "other.md#missing"),
        (10, "gone.md"),
    ]


def test_notes_checker_finds_mentions() -> None:
    # The mentions are assembled from parts, so that no line of the project itself names a note.
    note, other, sec = "meth" + "od.md", "solv" + "ers.md", "\u00a7"
    text = (
        f"as in {note} {sec}1.5\nsee {other} {sec}6.2 and docs/solvers.md {sec}1\n"
        "fine: docs/solvers.md#catalogue\n"
        f"the project {'no' + 'tes'}, the method\n{'no' + 'tes'} {sec}4.4\n"
    )
    assert [line for line, _ in notes_mentions(text)] == [1, 2, 2, 4, 5]
    assert notes_mentions("docs/ems.md#runs-that-start-mid-way, my_method.md") == []
