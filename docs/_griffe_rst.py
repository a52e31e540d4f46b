"""A griffe extension: the reST idioms of lockkit's docstrings, as Markdown.

The docstrings are read in a terminal and by ``help()`` as much as in the site, so they
keep their reST habits: roles (``:class:`~lockkit.Lock```), ``Text::`` literal blocks,
``.. code-block:: python``, ``.. versionadded::`` and simple tables. mkdocstrings renders
Markdown, so before a docstring is parsed this rewrites those into code spans, fenced
blocks, a note and Markdown tables. Google-style sections (``Args:``, ``Raises:``) are
left to griffe.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")
BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _roles(text: str) -> str:
    def code(match: re.Match[str]) -> str:
        target = match["target"]
        return f"`{target.rsplit('.', 1)[-1] if match['tilde'] else target}`"

    return ROLE.sub(code, text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The indented block after ``lines[start - 1]``: its lines and where it ends."""
    body: list[str] = []
    index = start
    while index < len(lines):
        line = lines[index]
        if line.strip() and _indent(line) <= indent:
            break
        body.append(line)
        index += 1
    while body and not body[-1].strip():
        body.pop()
        index -= 1
    return textwrap.dedent("\n".join(body)).strip("\n").splitlines(), index


def _table(lines: list[str]) -> list[str]:
    """A reST simple table (border, rows, border) as a Markdown table."""
    border = lines[0]
    starts = [m.start() for m in re.finditer(r"=+", border)]
    rows: list[list[str]] = []
    for line in lines[1:-1]:
        if not line.strip() or BORDER.match(line):
            continue
        line = line.ljust(len(border) + 1)
        cuts = [
            start
            for start in starts[1:]
            if not (line[start - 1].strip() and line[start].strip())  # text runs across
        ]
        edges = [0, *cuts, len(line)]
        cells = [line[a:b] for a, b in itertools.pairwise(edges)]
        cells += [""] * (len(starts) - len(cells))
        cells = [cell.strip() for cell in cells]
        if rows and not cells[0]:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    header = ["option", "default", ""][: len(starts)] + [""] * (len(starts) - 3)
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(starts)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST idioms rewritten as Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        indent = " " * _indent(line)
        if stripped.startswith(".. code-block::"):
            language = stripped.removeprefix(".. code-block::").strip() or "text"
            body, index = _block(lines, index + 1, _indent(line))
            out += [f"{indent}```{language}", *(f"{indent}{b}" for b in body), f"{indent}```"]
            continue
        if stripped.startswith(".. versionadded::"):
            out.append(f"{indent}*Added in version {stripped.split('::', 1)[1].strip()}.*")
            index += 1
            continue
        if BORDER.match(line):
            end = next((i for i in range(index + 1, len(lines)) if BORDER.match(lines[i])), None)
            if end is not None:
                out += _table(lines[index : end + 1])
                index = end + 1
                continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            body, end = _block(lines, index + 1, _indent(line))
            if body:
                lead = line.rstrip()[:-2].rstrip()
                if lead.strip():
                    out.append(lead + ":")
                out += ["", f"{indent}```text", *(f"{indent}{b}" for b in body), f"{indent}```"]
                index = end
                continue
        out.append(_roles(line))
        index += 1
    return "\n".join(out)


class ReSTToMarkdown(griffe.Extension):
    """Rewrite every docstring before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
