"""A history of lock events, and a checker that says whether a lock kept its promises.

Processes that take locks write one JSON object a line (:class:`Event`), stamped with
``time.clock_gettime(time.CLOCK_MONOTONIC)``, which every process on the machine shares,
so the lines of several processes merge into one history. :func:`check_history` reads
it and reports (:class:`HistoryReport`):

* **token order**: the accepted writes of a resource, in the order the storage applied
  them (the counter value each one wrote), carry strictly rising tokens, so a stale write
  was never accepted after a newer one;
* **overlaps**: two acquisitions of one resource whose holds (from ``granted`` to the
  end of the body) intersect. *Told* if one of them was told it lost the lock (``lost``,
  or a release refused as not owned), counted once per told acquisition however many
  later holders it overlapped; *untold* otherwise, counted per pair: a broken lock;
* **lost updates**: the counter in storage differs from the number of accepted writes;
* **liveness**: the longest gap between grants, and whether a grant came within
  ``2 x ttl + 1`` seconds of the last fault's end;
* **hangs** and **stderr**: passed in by the runner, reported with the rest.

Event kinds: ``acquire``, ``granted`` (``token``), ``body_end``, ``released``,
``lost`` (the holder was told), ``release_refused``, ``timeout``, ``unavailable``,
``error``, ``write_ok`` (``token``, ``value``: what the counter became),
``write_stale``, ``write_conflict``, ``write_error``, ``killed`` (by the runner,
``worker`` is the victim), ``fault_start`` / ``fault_end`` (``info`` says which).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ("Event", "HistoryReport", "Violation", "check_history", "read_history")

_SLICE_EVENTS: Final = 40


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One line of a history."""

    #: ``CLOCK_MONOTONIC`` seconds (system-wide)
    t: float
    #: the worker (process incarnation) that saw it, or ``nemesis``
    worker: str
    kind: str
    resource: str = ""
    token: int | None = None
    value: int | None = None
    info: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        data: dict[str, Any] = json.loads(line)
        return cls(**data)


def read_history(paths: Iterable[Path]) -> list[Event]:
    """The events of every file, merged in time order. A torn last line (a process
    killed mid-write) is skipped."""
    events: list[Event] = []
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                events.append(Event.from_json(line))
            except (ValueError, TypeError):
                continue
    events.sort(key=lambda e: e.t)
    return events


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """A broken promise, with the events around it."""

    kind: str
    message: str
    at: float
    history: tuple[Event, ...] = ()

    def render(self, seed: int | None = None) -> str:
        head = f"VIOLATION {self.kind}: {self.message}"
        if seed is not None:
            head += f" (seed {seed})"
        lines = [head, f"  history around t={self.at:.3f}:"]
        lines += [f"    {e.to_json()}" for e in self.history]
        return "\n".join(lines)


@dataclasses.dataclass(slots=True)
class HistoryReport:
    """What :func:`check_history` found."""

    acquisitions: int = 0
    accepted_writes: int = 0
    refused_stale: int = 0
    refused_conflict: int = 0
    overlaps_told: int = 0
    overlaps_untold: int = 0
    token_regressions: int = 0
    lost_updates: int = 0
    max_gap: float = 0.0
    recovery: float | None = None
    leftovers: int = 0
    hangs: int = 0
    faults: int = 0
    violations: list[Violation] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclasses.dataclass(slots=True)
class _Hold:
    worker: str
    resource: str
    token: int
    start: float
    end: float
    told: bool = False


def _slice(events: Sequence[Event], at: float, around: float = 1.0) -> tuple[Event, ...]:
    near = [e for e in events if at - around <= e.t <= at + around]
    if len(near) > _SLICE_EVENTS:
        near.sort(key=lambda e: abs(e.t - at))
        near = sorted(near[:_SLICE_EVENTS], key=lambda e: e.t)
    return tuple(near)


def _holds(events: Sequence[Event]) -> list[_Hold]:
    open_: dict[str, _Hold] = {}
    done: list[_Hold] = []
    last_seen: dict[str, float] = {}
    for e in events:
        last_seen[e.worker] = e.t
        if e.kind == "granted" and e.token is not None:
            if e.worker in open_:
                done.append(open_.pop(e.worker))
            open_[e.worker] = _Hold(e.worker, e.resource, e.token, e.t, float("inf"))
            continue
        hold = open_.get(e.info if e.kind == "killed" else e.worker)
        if hold is None:
            if e.kind in ("lost", "release_refused"):  # told after the body ended
                for prev in reversed(done):
                    if prev.worker == e.worker:
                        if e.token is None or prev.token == e.token:
                            prev.told = True
                        break
            continue
        if e.kind in ("lost", "release_refused"):
            hold.told = True
            hold.end = min(hold.end, e.t)
            if e.kind == "release_refused":
                done.append(open_.pop(hold.worker))
        elif e.kind in ("body_end", "killed"):
            hold.end = min(hold.end, e.t)
            done.append(open_.pop(hold.worker))
    for worker, hold in open_.items():
        hold.end = min(hold.end, last_seen.get(worker, hold.start))
        done.append(hold)
    return done


def check_history(
    events: Sequence[Event],
    *,
    ttl: float,
    final_values: Mapping[str, int | None],
    quiet_from: float | None = None,
    leftovers: Sequence[str] = (),
    hangs: Sequence[str] = (),
    stderr_problems: Sequence[str] = (),
) -> HistoryReport:
    """Check ``events`` (time-ordered) against the promises in the module docstring.

    Args:
        ttl: the lease the workers asked for.
        final_values: each resource's counter as read from storage at the end.
        quiet_from: when the last fault ended (liveness is checked from there).
        leftovers: what the servers still held after the run (keys, nodes, leases).
        hangs: workers that did not stop when asked.
        stderr_problems: lines of workers' stderr that should not be there.
    """
    report = HistoryReport()
    report.acquisitions = sum(1 for e in events if e.kind == "granted")
    report.faults = sum(1 for e in events if e.kind == "fault_start")
    writes: dict[str, list[Event]] = defaultdict(list)
    # a write whose outcome nobody saw (its worker was killed or cut off between sending
    # and logging it) may or may not have been applied
    unsure: dict[str, int] = defaultdict(int)
    pending: dict[tuple[str, str], Event] = {}
    for e in events:
        if e.kind == "write_try":
            pending[(e.worker, e.resource)] = e
        elif e.kind in ("write_ok", "write_stale", "write_conflict"):
            pending.pop((e.worker, e.resource), None)
        elif e.kind == "write_error":
            pending.pop((e.worker, e.resource), None)
            unsure[e.resource] += 1
    for worker_resource in pending:
        unsure[worker_resource[1]] += 1
    for e in events:
        if e.kind == "write_ok":
            writes[e.resource].append(e)
            report.accepted_writes += 1
        elif e.kind == "write_stale":
            report.refused_stale += 1
        elif e.kind == "write_conflict":
            report.refused_conflict += 1

    for resource, accepted in writes.items():
        accepted.sort(key=lambda e: e.value or 0)
        for before, after in itertools.pairwise(accepted):
            if after.token is not None and before.token is not None and after.token <= before.token:
                report.token_regressions += 1
                report.violations.append(
                    Violation(
                        "token_regression",
                        f"{resource}: write #{after.value} by {after.worker} carried token "
                        f"{after.token}, not above #{before.value}'s {before.token}",
                        after.t,
                        _slice(events, after.t),
                    )
                )
        final = final_values.get(resource)
        maybe = unsure.get(resource, 0)
        if final is None or not len(accepted) <= final <= len(accepted) + maybe:
            report.lost_updates += abs((final or 0) - len(accepted))
            report.violations.append(
                Violation(
                    "lost_update",
                    f"{resource}: the counter is {final} after {len(accepted)} accepted "
                    f"writes and {maybe} whose outcome is unknown",
                    accepted[-1].t if accepted else 0.0,
                    _slice(events, accepted[-1].t if accepted else 0.0),
                )
            )

    by_resource: dict[str, list[_Hold]] = defaultdict(list)
    for hold in _holds(events):
        by_resource[hold.resource].append(hold)
    told: set[int] = set()
    for holds in by_resource.values():
        holds.sort(key=lambda h: h.start)
        for i, a in enumerate(holds):
            for b in holds[i + 1 :]:
                if b.start >= a.end:
                    break
                if a.token == b.token:
                    continue
                if a.told or b.told:
                    told.add(id(a) if a.told else id(b))
                    continue
                report.overlaps_untold += 1
                report.violations.append(
                    Violation(
                        "untold_overlap",
                        f"{a.resource}: {b.worker} (token {b.token}) was granted at "
                        f"{b.start:.3f} inside the hold of {a.worker} (token {a.token}, "
                        f"{a.start:.3f}..{a.end:.3f}), and neither was told it lost the lock",
                        b.start,
                        _slice(events, b.start),
                    )
                )

    report.overlaps_told = len(told)

    grants = [e.t for e in events if e.kind == "granted"]
    for first, second in itertools.pairwise(grants):
        report.max_gap = max(report.max_gap, second - first)
    if quiet_from is not None:
        later = [t for t in grants if t >= quiet_from]
        holding = [h for hs in by_resource.values() for h in hs if h.start < quiet_from < h.end]
        report.recovery = (later[0] - quiet_from) if later else None
        bound = 2 * ttl + 1
        if not holding and (report.recovery is None or report.recovery > bound):
            report.violations.append(
                Violation(
                    "liveness",
                    f"no grant within {bound:g}s of the last fault's end "
                    f"(next grant after {report.recovery})",
                    quiet_from,
                    _slice(events, quiet_from, around=bound),
                )
            )
            report.recovery = report.recovery if report.recovery is not None else float("inf")

    report.leftovers = len(leftovers)
    for item in leftovers:
        report.violations.append(Violation("leftover", item, 0.0))
    report.hangs = len(hangs)
    for worker in hangs:
        report.violations.append(Violation("hang", f"{worker} did not stop when asked", 0.0))
    for line in stderr_problems:
        report.violations.append(Violation("stderr", line, 0.0))
    return report
