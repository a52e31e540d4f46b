"""The code in the documentation runs as a user would paste it.

Every ```python block of README.md (and of docs/*.md, if there are any) is a complete
program: it is written to a file and run by a fresh interpreter, which must exit with 0
and print nothing on standard error (warnings included, so a coroutine left unawaited or
a connection left open fails the test). A block that is not meant to run on its own says
so in its info string, ```python fragment, and is then only compiled (top-level ``await``
allowed); commands and other text go in ```console, ```bash or ```text blocks, which are
not run.

Blocks that talk to a server name it by its usual local address, for instance
``redis://localhost:6379/0``. The test puts the URL of the matching server fixture in its
place and gives the block that server's marker, so ``-m "not redis"`` leaves it out like
every other Redis test.

The docstrings of the ``lockkit`` package are checked too, cheaply: ``>>>`` examples run
through :mod:`doctest`, and ``.. code-block:: python`` examples, which are fragments by
nature, must compile.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lockkit"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PYTHON = {"python", "py", "python3"}
TIMEOUT = 60.0

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*?)[ \t]*$")


@dataclasses.dataclass(frozen=True)
class Server:
    """A server a block may need: the address blocks use, and where the test's is."""

    placeholder: str
    fixture: str
    mark: pytest.MarkDecorator
    attribute: str = "url"  # the fixture's attribute that replaces the placeholder


SERVERS = {
    "redis": Server("redis://localhost:6379/0", "redis_server", pytest.mark.redis),
    "redlock": Server(
        "redlock://localhost:6379,localhost:6380,localhost:6381",
        "redis_masters",
        pytest.mark.redlock,
    ),
    "zookeeper": Server("zookeeper://localhost:2181", "zookeeper_server", pytest.mark.zookeeper),
    "etcd": Server("etcd://localhost:2379", "etcd_server", pytest.mark.etcd),
    "kafka": Server("localhost:9092", "kafka_broker", pytest.mark.kafka, "bootstrap_servers"),
    "postgres": Server(
        "postgresql://localhost:5432/lockkit", "postgres_server", pytest.mark.postgres
    ),
}


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: tuple[str, ...]
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def is_python(self) -> bool:
        return bool(self.info) and self.info[0].lower() in PYTHON

    @property
    def is_fragment(self) -> bool:
        return "fragment" in self.info[1:]

    @property
    def servers(self) -> list[str]:
        return [kind for kind, server in SERVERS.items() if server.placeholder in self.code]


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with their info strings."""
    blocks: list[Block] = []
    opening: re.Match[str] | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(line)
        if opening is None:
            if match:
                opening, start, body = match, number, []
            continue
        fence = opening["fence"]
        if match and match["fence"].startswith(fence) and not match["info"]:
            indent = len(opening["indent"])
            code = "".join(f"{text[indent:]}\n" if text.strip() else "\n" for text in body)
            blocks.append(Block(path, start, tuple(opening["info"].split()), code))
            opening = None
        else:
            body.append(line)
    assert opening is None, f"{path.name}:{start}: the code block is never closed"
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in fenced_blocks(path)]


def test_the_documents_have_python_examples() -> None:
    assert any(block.is_python for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.where)
def test_every_block_names_its_language(block: Block) -> None:
    """So that no Python hides in an unmarked block, where it would never be run."""
    assert block.info, f"{block.where}: say ```python, ```console, ```text..."


def _params() -> list[Any]:
    return [
        pytest.param(block, marks=[SERVERS[kind].mark for kind in block.servers], id=block.where)
        for block in BLOCKS
        if block.is_python
    ]


@pytest.mark.parametrize("block", _params())
def test_python_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if block.is_fragment:
        compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    code = block.code
    for kind in block.servers:
        server = request.getfixturevalue(SERVERS[kind].fixture)
        code = code.replace(SERVERS[kind].placeholder, getattr(server, SERVERS[kind].attribute))
    assert "localhost" not in code, (
        f"{block.where} names a server the test cannot provide: use one of "
        f"{[server.placeholder for server in SERVERS.values()]}, or add it to SERVERS"
    )
    script = tmp_path / "example.py"
    script.write_text(code)
    # The interpreter's own warning filters, plus unclosed sockets and files; the working
    # tree's lockkit even if it is not the installed one.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    try:
        result = subprocess.run(
            [sys.executable, "-W", "default::ResourceWarning", str(script)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"{block.where} did not finish within {TIMEOUT:g} s\n{stderr}")
    output = f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{block.where} failed\n{output}"
    assert not result.stderr, f"{block.where} wrote to stderr\n{output}"


# -- docstrings of the package --------------------------------------------------------

CODE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: python[ \t]*$")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _docstrings(path: Path) -> list[tuple[str, int, str]]:
    """``(qualified name, line, docstring)`` of a module and of everything defined in it,
    read from the source: nothing is imported."""
    tree = ast.parse(path.read_text(), str(path))
    module = _module_name(path)
    found: list[tuple[str, int, str]] = []
    if (doc := ast.get_docstring(tree)) is not None:
        found.append((module, 1, doc))
    definitions = (
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )
    for node in definitions:
        if (doc := ast.get_docstring(node)) is not None:
            found.append((f"{module}.{node.name}", node.lineno, doc))
    return found


def _code_blocks(doc: str) -> list[str]:
    """The bodies of the ``.. code-block:: python`` directives of a docstring."""
    lines = doc.splitlines()
    blocks: list[str] = []
    for number, line in enumerate(lines):
        if not (match := CODE_BLOCK.match(line)):
            continue
        indent = len(match["indent"])
        body: list[str] = []
        for text in lines[number + 1 :]:
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            body.append(text)
        blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


def test_docstring_examples() -> None:
    """``>>>`` examples pass :mod:`doctest`; ``.. code-block:: python`` ones compile.

    Run in a fresh interpreter: CPython 3.11 before 3.11.8 can raise a spurious
    "AST constructor recursion depth mismatch" from compile() in a process whose other
    threads (left by earlier tests) touched the compiler."""
    root = Path(__file__).resolve().parents[2]
    code = "from tests.unit.test_docs import check_docstrings; check_docstrings()"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def check_docstrings() -> None:
    """The body of :func:`test_docstring_examples`."""
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, line, doc in _docstrings(path):
            for code in _code_blocks(doc):
                compile(code, f"{name} (line {line})", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if ">>>" in doc:
                module = importlib.import_module(_module_name(path))
                runner.run(parser.get_doctest(doc, dict(vars(module)), name, str(path), line))
    assert runner.summarize(verbose=False).failed == 0


def test_docstring_code_blocks_are_found() -> None:
    doc = "Use it so:\n\n.. code-block:: python\n\n    x = 1\n    await f(x)\n\nThe end.\n"
    assert _code_blocks(doc) == ["\nx = 1\nawait f(x)\n"]
