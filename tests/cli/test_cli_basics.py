"""The operator's commands where no server is needed: the URL, memory://, errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lockkit.cli import cli

COMMANDS = [["inspect", "x"], ["list"], ["watch", "x"], ["release", "--force", "--yes", "x"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_memory_says_it_is_per_process(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--url", "memory://"])
    assert result.exit_code == 1
    assert "embedded backend" in result.output and "inside each process" in result.output
    assert "free" not in result.output


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_lockkit_url_is_read(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKKIT_URL", "memory://")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "embedded backend" in result.output


def test_no_url_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCKKIT_URL", raising=False)
    result = CliRunner().invoke(cli, ["inspect", "x"])
    assert result.exit_code == 1
    assert result.output.strip() == "lockkit: no backend URL: give --url or set LOCKKIT_URL"


def test_unreachable_server_hides_the_password() -> None:
    url = "redis://user:s3cret-pw@127.0.0.1:1/0"
    result = CliRunner().invoke(cli, ["list", "--url", url])
    assert result.exit_code == 1
    assert "s3cret-pw" not in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "unavailable" in result.output


def test_release_needs_force() -> None:
    result = CliRunner().invoke(cli, ["release", "x", "--url", "redis://127.0.0.1:1"])
    assert result.exit_code == 1 and "--force" in result.output


def test_bad_name_and_bad_scheme() -> None:
    result = CliRunner().invoke(cli, ["inspect", "", "--url", "redis://127.0.0.1:1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["inspect", "x", "--url", "nope://x"])
    assert result.exit_code == 1 and "unknown URL scheme" in result.output
