"""The documentation site's sources hang together, checked without building the site.

``make docs`` builds it with ``mkdocs build --strict`` (in CI too); these checks are the
cheap part of that, so that a page left out of the nav or a link that GitHub cannot
follow shows up in the unit tests:

* every Markdown page under ``docs/`` is in the nav of ``mkdocs.yml``, and every page the
  nav names exists;
* every relative link in README.md and under ``docs/`` points at a file that exists and,
  with ``#anchor``, at a heading of it, as GitHub resolves them;
* a page links to a file outside ``docs/`` (which the site does not have) only to include
  a section of it: ``[text](../README.md#section "include")`` (see ``docs/_hooks.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("**/*.md"))
DOCUMENTS = [ROOT / "README.md", *PAGES]

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
LINK = re.compile(
    r"(?<!!)\[(?:[^\]\n]|\\\])*\]\((?P<target>[^)\s]+)(?:\s+\"(?P<title>[^\"]*)\")?\)"
)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(path: Path, *, spans: bool = False) -> list[str]:
    """The lines of a Markdown file outside fenced code (code spans blanked unless
    ``spans``)."""
    lines: list[str] = []
    fence: str | None = None
    for line in path.read_text().splitlines():
        if match := FENCE.match(line):
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence):
                fence = None
            lines.append("")
            continue
        lines.append("" if fence else line if spans else CODE_SPAN.sub("``", line))
    return lines


def slug(title: str) -> str:
    """A heading's anchor as GitHub (and the site, configured alike) makes it."""
    title = re.sub(r"<[^>]+>", "", title.replace("`", "")).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(2)) for line in _prose(path, spans=True) if (m := HEADING.match(line))}


def documented(path: Path) -> list[str]:
    """The objects an API reference page renders (``::: lockkit.abc``): the site gives
    each of their members an anchor named after it (the strict build checks those)."""
    return re.findall(r"^:::\s+([\w.]+)", path.read_text(), re.MULTILINE)


def nav_pages() -> list[str]:
    """The pages the nav of mkdocs.yml names, relative to docs/."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    return re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$", nav, re.MULTILINE)


def test_every_page_is_in_the_nav() -> None:
    named = nav_pages()
    assert len(named) == len(set(named)), "a page is in the nav twice"
    pages = {page.relative_to(DOCS).as_posix() for page in PAGES}
    assert pages - set(named) == set(), "pages missing from the nav of mkdocs.yml"
    assert set(named) - pages == set(), "the nav names pages that do not exist"


def test_the_site_is_built_strictly() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict:\s*true\s*$", config, re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict" in makefile
    assert "make docs" in (ROOT / ".ci" / "run").read_text()


def _links() -> list[tuple[Path, int, str, str | None]]:
    found = []
    for path in DOCUMENTS:
        for number, line in enumerate(_prose(path), start=1):
            for match in LINK.finditer(line):
                found.append((path, number, match["target"], match["title"]))
    return found


@pytest.mark.parametrize(
    ("path", "line", "target", "title"),
    [link for link in _links() if not re.match(r"^[a-z][a-z0-9+.-]*:", link[2])],
    ids=lambda value: str(value.relative_to(ROOT)) if isinstance(value, Path) else str(value),
)
def test_relative_links_resolve(path: Path, line: int, target: str, title: str | None) -> None:
    where = f"{path.relative_to(ROOT)}:{line}"
    file, _, anchor = target.partition("#")
    resolved = (path.parent / file).resolve() if file else path
    assert resolved.exists(), f"{where}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved) or any(
            anchor == name or anchor.startswith(f"{name}.") for name in documented(resolved)
        ), f"{where}: {resolved.name} has no heading #{anchor}"
    if path.is_relative_to(DOCS) and not resolved.is_relative_to(DOCS):
        assert title == "include", (
            f"{where}: the site has no {target}; include the section instead, "
            f'[text]({target} "include"), or link to a page under docs/'
        )


def test_slugs_are_githubs() -> None:
    assert slug("Redis under failover") == "redis-under-failover"
    assert slug("`lockkit.abc`: the extension points") == "lockkitabc-the-extension-points"
    assert slug("1. Local installs (the default, and what CI does)") == (
        "1-local-installs-the-default-and-what-ci-does"
    )
