from __future__ import annotations

from click.testing import CliRunner

from lockkit._demo import run_demo
from lockkit.cli import cli


async def test_demo_refuses_the_stale_write() -> None:
    report = await run_demo(workers=3, stock=6, ttl=0.2)
    assert report.ok
    assert report.sold == 6 and report.final_stock == 0
    assert report.stale_refused == 1 and report.stale_accepted == 0
    assert report.losses_reported == 1


def test_demo_command_prints_checks() -> None:
    result = CliRunner().invoke(cli, ["demo", "--workers", "2", "--stock", "3", "--ttl", "0.2"])
    assert result.exit_code == 0, result.output
    assert "write refused" in result.output
    assert "FAIL" not in result.output and result.output.count("PASS") == 5


def test_demo_bad_url_is_a_clean_error() -> None:
    result = CliRunner().invoke(cli, ["demo", "--url", "nope://x"])
    assert result.exit_code != 0
    assert "unknown URL scheme" in result.output


def test_inspect_on_memory_says_there_is_nothing_to_see() -> None:
    result = CliRunner().invoke(cli, ["inspect", "orders:1", "--url", "memory://"])
    assert result.exit_code == 1
    assert "embedded backend" in result.output and "free" not in result.output
