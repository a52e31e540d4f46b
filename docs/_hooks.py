"""MkDocs hooks: pages that show a section of a file kept outside ``docs/``.

A page includes a section of README.md (or a whole file, such as CHANGELOG.md) with a
link on a line of its own whose title is ``"include"``::

    [Guards, in the README](../README.md#guards "include")

On GitHub that is a link to the section; in the site the line is replaced by the
section's text (its heading dropped, its sub-headings moved under the page's current
heading). The text stays in one file, and the code blocks in it are run by the tests
once, where they are written. Links in the included text are rewritten so that they
resolve from the page: to a page of the site when they point into ``docs/`` or at a
section another page includes, and left alone otherwise (``mkdocs build --strict``
then fails on them, which is the point).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from pymdownx.slugs import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

INCLUDE = re.compile(
    r'^\[[^\]\n]*\]\((?P<path>[^)#\s]+\.md)(?:#(?P<anchor>[\w-]+))?\s+"include"\)[ \t]*$',
    re.MULTILINE,
)
HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<title>.+?)[ \t#]*$")
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
LINK = re.compile(r"(?<!!)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
_slug = slugify(case="lower")

# (file relative to ROOT, anchor or "") -> page (relative to DOCS) that includes it
_included: dict[tuple[str, str], str] = {}


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """``(line index, level, slug)`` of the headings outside fenced code."""
    found: list[tuple[int, int, str]] = []
    fence: str | None = None
    for index, line in enumerate(lines):
        if match := FENCE.match(line):
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence) and not line.strip()[len(marker) :].strip():
                fence = None
            continue
        if fence is None and (match := HEADING.match(line)):
            found.append((index, len(match["hashes"]), _slug(match["title"], "-")))
    return found


def _section(path: Path, anchor: str | None) -> tuple[list[str], int]:
    """The lines of a section (without its heading) and the section's level."""
    lines = path.read_text().splitlines()
    headings = _headings(lines)
    if anchor is None:  # the whole file but its title
        if headings and headings[0][1] == 1:
            return lines[headings[0][0] + 1 :], 1
        return lines, 1
    for position, (index, level, slug) in enumerate(headings):
        if slug == anchor:
            # a title's section is its preamble: up to the first heading under it
            last = 6 if level == 1 else level
            end = next((i for i, lvl, _ in headings[position + 1 :] if lvl <= last), len(lines))
            return lines[index + 1 : end], level
    raise ValueError(f"{path.relative_to(ROOT)} has no section #{anchor}")


def _relative(target: str, page: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(page) or ".")


def _rewrite_links(text: str, source: Path, page: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        try:
            in_docs = resolved.relative_to(DOCS).as_posix()
        except ValueError:
            key = resolved.relative_to(ROOT).as_posix()
            in_docs = _included.get((key, anchor)) or _included.get((key, ""))
            if in_docs is None:
                return match.group(0)
            if (key, anchor) in _included:
                anchor = ""
        new = _relative(in_docs, page) + (f"#{anchor}" if anchor else "")
        return f"]({new}{match['title'] or ''})"

    return LINK.sub(replace, text)


def _source(match: re.Match[str], page: str) -> Path:
    return (DOCS / posixpath.dirname(page) / match["path"]).resolve()


def on_files(files: Any, config: Any) -> Any:
    """Note which page includes which section, for the links of other included text."""
    _included.clear()
    for file in files.documentation_pages():
        markdown = Path(file.abs_src_path).read_text()
        for match in INCLUDE.finditer(markdown):
            key = _source(match, file.src_uri).relative_to(ROOT).as_posix()
            _included[(key, match["anchor"] or "")] = file.src_uri
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each include line by the section it names."""
    src = page.file.src_uri
    lines = markdown.splitlines()
    headings = _headings(lines)
    out: list[str] = []
    for number, line in enumerate(lines):
        match = INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        current = max((lvl for i, lvl, _ in headings if i < number), default=1)
        source = _source(match, src)
        body, level = _section(source, match["anchor"])
        inner = {i for i, _, _ in _headings(body)}
        for index, text in enumerate(body):
            if index in inner:
                heading = HEADING.match(text)
                assert heading is not None
                depth = min(6, len(heading["hashes"]) - level + current)
                text = f"{'#' * depth} {heading['title']}"
            out.append(_rewrite_links(text, source, src))
    return "\n".join(out) + "\n"
