"""The history checker catches each broken promise on a hand-made history."""

from __future__ import annotations

from pathlib import Path

from lockkit.testing import Event, check_history, read_history

R = "r"


def ev(
    t: float, worker: str, kind: str, token: int | None = None, value: int | None = None
) -> Event:
    return Event(t, worker, kind, R, token, value)


def clean() -> list[Event]:
    return [
        ev(0.0, "a", "granted", 1),
        ev(0.1, "a", "write_ok", 1, 1),
        ev(0.2, "a", "body_end", 1),
        ev(0.3, "b", "granted", 2),
        ev(0.4, "b", "write_ok", 2, 2),
        ev(0.5, "b", "body_end", 2),
    ]


def test_a_clean_history_passes() -> None:
    report = check_history(clean(), ttl=1, final_values={R: 2}, quiet_from=0.0)
    assert report.ok, report.violations
    assert (report.acquisitions, report.accepted_writes, report.recovery) == (2, 2, 0.0)


def test_untold_overlap_and_told_overlap() -> None:
    events = [
        ev(0.0, "a", "granted", 1),
        ev(0.1, "b", "granted", 2),
        ev(0.2, "b", "write_ok", 2, 1),
        ev(0.3, "b", "body_end", 2),
        ev(0.4, "a", "body_end", 1),
    ]
    report = check_history(events, ttl=1, final_values={R: 1})
    assert report.overlaps_untold == 1
    assert [v.kind for v in report.violations] == ["untold_overlap"]
    assert "VIOLATION untold_overlap" in report.violations[0].render(seed=7)
    told = [*events[:4], ev(0.35, "a", "lost", 1), events[4]]
    report = check_history(told, ttl=1, final_values={R: 1})
    assert report.ok and report.overlaps_told == 1


def test_token_regression_and_lost_update() -> None:
    events = clean()
    events[4] = ev(0.4, "b", "write_ok", 0, 2)  # an older token accepted after a newer
    report = check_history(events, ttl=1, final_values={R: 1})
    kinds = sorted(v.kind for v in report.violations)
    assert kinds == ["lost_update", "token_regression"]


def test_a_write_whose_outcome_nobody_saw_may_have_landed() -> None:
    """A worker killed (or cut off) between sending its write and logging the reply: the
    counter may be one higher than the accepted writes, never lower, never two higher."""
    events = [
        *clean(),
        ev(0.6, "c", "granted", 3),
        ev(0.7, "c", "write_try", 3, 3),  # killed here
        ev(0.8, "d", "granted", 4),
        ev(0.9, "d", "write_try", 4, 3),
        ev(1.0, "d", "write_error", 4, 3),  # the reply was lost
    ]
    for final in (2, 3, 4):
        assert check_history(events, ttl=1, final_values={R: final}).ok, final
    for final in (1, 5):
        report = check_history(events, ttl=1, final_values={R: final})
        assert [v.kind for v in report.violations] == ["lost_update"], final


def test_liveness_leftovers_hangs_stderr() -> None:
    report = check_history(
        clean(),
        ttl=1,
        final_values={R: 2},
        quiet_from=0.6,
        leftovers=["key x"],
        hangs=["w1.0"],
        stderr_problems=["Task was destroyed but it is pending!"],
    )
    assert sorted(v.kind for v in report.violations) == ["hang", "leftover", "liveness", "stderr"]


def test_read_history_merges_and_skips_a_torn_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(ev(1.0, "a", "granted", 1).to_json() + "\n{torn")
    (tmp_path / "b.jsonl").write_text(ev(0.5, "b", "granted", 2).to_json() + "\n")
    events = read_history(sorted(tmp_path.glob("*.jsonl")))
    assert [e.worker for e in events] == ["b", "a"]
