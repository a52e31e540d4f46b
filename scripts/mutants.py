"""Deliberate bugs the test suite must catch: ``make mutants``.

Each mutant replaces one exact piece of source text (found exactly once) with a broken
version, runs the tests named for it, and expects them to FAIL. A mutant whose tests
pass has survived: the suite has lost its teeth there, and this script exits 1. The
source is restored after each mutant, whatever happens.

Usage: python scripts/mutants.py [--list] [NAME_SUBSTRING ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = "tests/contract/test_conformance.py::test_conformance"
GUARD_CONFORMANCE = "tests/contract/test_guards.py::test_guard_conformance"


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


REDIS = "tests/backends/redis/test_redis_guarantees.py"
STRAYS = "tests/backends/redis/test_redis_strays.py"
ZK_BACKEND = "lockkit/backends/zookeeper.py"
ZK_SESSION = "lockkit/_drivers/zookeeper/session.py"
ZK_TESTS = "tests/backends/zookeeper"
ETCD_BACKEND = "lockkit/backends/etcd.py"
ETCD_DRIVER = "lockkit/_drivers/etcd.py"
ETCD_TESTS = "tests/backends/etcd"
REDLOCK_BACKEND = "lockkit/backends/redlock.py"
REDLOCK_FAULTS = "tests/backends/redlock/test_redlock_faults.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "memory release ignores the owner",
        "lockkit/backends/memory.py",
        "    async def release(self, name: str, owner: str) -> bool:\n"
        "        now = self.clock.now()\n"
        "        if (entry := self._held_by(name, owner, now)) is None:",
        "    async def release(self, name: str, owner: str) -> bool:\n"
        "        now = self.clock.now()\n"
        "        if (entry := self._store.entries.get(name)) is None:",
        (f"{CONFORMANCE}[memory-check_old_holder_cannot_touch_new_holder]",),
    ),
    Mutant(
        "memory extend ignores the owner",
        "lockkit/backends/memory.py",
        "    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:\n"
        "        now = self.clock.now()\n"
        "        if (entry := self._held_by(name, owner, now)) is None:",
        "    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:\n"
        "        now = self.clock.now()\n"
        "        if (entry := self._store.entries.get(name)) is None:",
        (f"{CONFORMANCE}[memory-check_old_holder_cannot_touch_new_holder]",),
    ),
    Mutant(
        "memory serves the newest waiter first",
        "lockkit/backends/memory.py",
        "            waiter = entry.queue.popleft()",
        "            waiter = entry.queue.pop()",
        (f"{CONFORMANCE}[memory-check_fifo]",),
    ),
    Mutant(
        "memory tokens do not rise",
        "lockkit/backends/memory.py",
        "        self._store.counter += 1",
        "        self._store.counter += 0",
        (f"{CONFORMANCE}[memory-check_tokens_increase]",),
    ),
    Mutant(
        "renewal confirmed from the reply time",
        "lockkit/_core/_lease.py",
        "                lease.confirm(started)",
        "                lease.confirm(now)",
        ("tests/unit/test_lease.py::test_a_renewal_counts_from_its_send_not_its_reply",),
    ),
    Mutant(
        "no drift allowance in the safe deadline",
        "lockkit/_core/_lease.py",
        "        self.safe_deadline = started + self.ttl - self.drift",
        "        self.safe_deadline = started + self.ttl",
        ("tests/unit/test_lease.py::test_safe_deadline_accounts_for_drift",),
    ),
    Mutant(
        "release forgets the hold only when the server confirms",
        "lockkit/_core/_hold.py",
        "        self.forget(acq)\n        backend = self.session.backend",
        "        backend = self.session.backend",
        (
            "tests/unit/test_session.py::test_a_task_cancelled_inside_release_holds_nothing",
            "tests/unit/test_session.py::test_async_with_leaves_nothing_held_when_release_fails",
        ),
    ),
    Mutant(
        "a loss waits for the release before reaching the caller",
        "lockkit/_core/_hold.py",
        "        if lease.lost:\n            # the caller hears of the loss now;",
        "        if False:\n            # the caller hears of the loss now;",
        ("tests/unit/test_session.py::test_loss_reaches_the_caller_when_the_body_is_cancelled",),
    ),
    Mutant(
        "a new acquire does not ride out an outage",
        "lockkit/_core/_waiting.py",
        "                if asked - outage_since >= outage_grace or asked >= deadline:",
        "                if True:",
        ("tests/unit/test_waiting.py::test_a_short_outage_is_ridden_out",),
    ),
    Mutant(
        "a waiter that times out stays queued",
        "lockkit/_core/_waiting.py",
        "                seat = None\n"
        '            await cleanup.run(f"leave the queue of {name!r}", leave)\n',
        "                seat = None\n",
        ("tests/unit/test_waiting.py::test_timeout_raises_and_leaves_the_queue",),
    ),
    Mutant(
        "extend does not tell the watchdog",
        "lockkit/_core/_lock.py",
        "        session.rescheduled(acq.lease)\n",
        "",
        ("tests/unit/test_session.py::test_extend_to_a_shorter_ttl_keeps_the_lease_renewed",),
    ),
    Mutant(
        "closing releases under a running body without telling it",
        "lockkit/_core/_hold.py",
        '                acq.lease.mark_lost("the LockClient was closed while the lock was held")',
        "                pass",
        ("tests/unit/test_session.py::test_closing_tells_a_body_that_still_runs",),
    ),
    Mutant(
        "releasing an old lost hold clears the newer one's occupancy",
        "lockkit/_core/_session.py",
        "        if current == owner or (isinstance(current, Lease)"
        " and current.token.owner == owner):",
        "        if current is not None:",
        (
            "tests/unit/test_session.py::"
            "test_releasing_a_lost_hold_keeps_the_newer_one_of_the_same_task",
        ),
    ),
    Mutant(
        "redis mints the last token again when the fence is ahead of the clock",
        "lockkit/_lua/_queue.lua",
        "    token = last + 1",
        "    token = last",
        (f"{REDIS}::test_tokens_pass_a_fence_ahead_of_the_clock",),
    ),
    Mutant(
        "redis queue keeper never refreshes its waiters",
        "lockkit/backends/redis.py",
        "            for name in room.names():",
        "            for name in []:",
        (f"{REDIS}::test_a_long_wait_keeps_its_place_in_line",),
    ),
    Mutant(
        "redis free lock does not wake a head that has not taken it",
        "lockkit/_lua/acquire.lua",
        "    elseif head then\n",
        "    elseif false then\n",
        (f"{STRAYS}::test_a_lost_leave_at_the_head_of_a_free_lock_does_not_block",),
    ),
    Mutant(
        "redis sweep drops live waiters too",
        "lockkit/_lua/sweep.lua",
        "if of == client and not waiting[owner] and",
        "if of == client and",
        (f"{STRAYS}::test_a_live_waiter_is_never_swept",),
    ),
    Mutant(
        "redis takes a wake-up that overtook its first reply for an ended wait",
        "lockkit/backends/redis.py",
        "        if owner in self._asking or owner in self._claimed:\n",
        "        if owner in self._claimed:\n",
        (f"{STRAYS}::test_a_wake_up_that_overtakes_the_first_reply_is_kept",),
    ),
    Mutant(
        "redis waiter ignores the token its wake-up carried (claims every handoff)",
        "lockkit/_core/_waiting.py",
        "            if token is not None and token > seen and clock.now() - basis < fresh_for:",
        "            if False:",
        ("tests/backends/redis/test_redis_backend.py::test_one_command_per_handoff",),
    ),
    Mutant(
        "a carried token counts its lease from the wake-up, not the last refused ask",
        "lockkit/_core/_waiting.py",
        "                return Grant(token, basis)",
        "                return Grant(token, clock.now())",
        (
            "tests/unit/test_waiting.py::test_a_carried_token_is_a_grant_counted_from_the_last_refused_ask",
        ),
    ),
    Mutant(
        "a carried token granted before a later refusal is taken",
        "lockkit/_core/_waiting.py",
        "            if token is not None and token > seen and clock.now() - basis < fresh_for:",
        "            if token is not None and clock.now() - basis < fresh_for:",
        ("tests/unit/test_waiting.py::test_a_carried_token_from_before_a_later_answer_is_ignored",),
    ),
    Mutant(
        "sentinel view takes the announced primary on one vote",
        "lockkit/_drivers/redis/sentinel.py",
        "        return max(rivals, default=0) + pending < self.majority",
        "        return True",
        (
            "tests/backends/redis/test_redis_failover.py::"
            "test_a_stale_announcement_never_outvotes_a_majority",
        ),
    ),
    Mutant(
        "redis grant counted from the reply",
        "lockkit/backends/redis.py",
        "Turn(Grant(int(reply[1]), started))",
        "Turn(Grant(int(reply[1]), self.clock.now()))",
        (f"{REDIS}::test_a_slow_grant_counts_from_the_send",),
    ),
    Mutant(
        "redis free lock ignores a live queued waiter (barging)",
        "lockkit/_lua/acquire.lua",
        "  if ARGV[5] == '0' then",
        "  if true then",
        (f"{REDIS}::test_a_free_lock_waits_for_its_live_queue",),
    ),
    Mutant(
        "redis release ignores the owner",
        "lockkit/_lua/release.lua",
        "if holder ~= owner and holder ~= '~' .. owner then",
        "if false then",
        (
            f"{REDIS}::test_only_the_owner_releases_or_extends",
            f"{CONFORMANCE}[redis-check_old_holder_cannot_touch_new_holder]",
        ),
    ),
    Mutant(
        "redis extend ignores the owner",
        "lockkit/_lua/extend.lua",
        "  if redis.call('GET', KEYS[i]) == ARGV[i] then",
        "  if redis.call('GET', KEYS[i]) then",
        (
            f"{REDIS}::test_only_the_owner_releases_or_extends",
            f"{CONFORMANCE}[redis-check_old_holder_cannot_touch_new_holder]",
        ),
    ),
    Mutant(
        "redis adopts a connect begun before a drop (a demoted primary)",
        "lockkit/_drivers/redis/resp.py",
        "        if generation != self._generation:\n",
        "        if False:\n",
        (
            "tests/backends/redis/test_redis_lifecycle.py::"
            "test_a_connect_in_progress_when_dropped_is_not_adopted",
        ),
    ),
    Mutant(
        "redis closes its connection before its waiters left their queues",
        "lockkit/backends/redis.py",
        "                await room.drained()",
        "                pass",
        ("tests/backends/redis/test_redis_lifecycle.py::test_closing_the_client_ends_its_waits",),
    ),
    Mutant(
        "acquisitions keyed by nothing but the name (two objects in one task wait forever)",
        "lockkit/_core/_hold.py",
        "        session.occupy(task, name, owner)\n",
        "",
        ("tests/unit/test_session.py::test_two_lock_objects_in_one_task_fail_at_once",),
    ),
    Mutant(
        "waiters stay subscribed on a demoted Sentinel primary",
        "lockkit/_drivers/redis/topology.py",
        "            self._channel.reconnect()",
        "            pass",
        (
            "tests/backends/redis/test_redis_failover.py::"
            "test_waiters_listen_on_the_new_primary_after_a_switch",
        ),
    ),
    Mutant(
        "Cluster slot handovers are not followed (leases wait for their next renewal)",
        "lockkit/_drivers/redis/topology.py",
        "            self._reconfirm(\n",
        "            (lambda *_: None)(\n",
        (
            "tests/backends/redis/test_redis_failover.py::"
            "test_cluster_slot_handovers_are_followed_before_any_request_fails",
        ),
    ),
    Mutant(
        "the first node to answer decides the Cluster slot map",
        "lockkit/_drivers/redis/slots.py",
        "key=lambda c: c.epoch)",
        "key=lambda c: 0)",
        ("tests/unit/test_cluster_slots.py::test_the_newest_epoch_wins_whoever_answered_first",),
    ),
    Mutant(
        "zookeeper waiter waits behind the first node, not the one just ahead",
        ZK_BACKEND,
        'self._queue_behind(node, f"{node.folder}/{order[place - 1]}" if place > 0 else None)',
        'self._queue_behind(node, f"{node.folder}/{order[0]}" if place > 0 else None)',
        (
            f"{CONFORMANCE}[zookeeper-check_fifo]",
            f"{CONFORMANCE}[zookeeper-check_mutual_exclusion]",
        ),
    ),
    Mutant(
        "zookeeper cancelled waiter leaves its node behind",
        ZK_BACKEND,
        "            await self._remove(node.name, node.owner)\n",
        "            await anyio.sleep(0)\n",
        (f"{ZK_TESTS}/test_zookeeper_cancel.py::test_a_thousand_cancelled_waiters_leave_no_node",),
    ),
    Mutant(
        "zookeeper session loss is only logged (no session keeper)",
        ZK_BACKEND,
        '        ctx.start_soon(keeper.run, name="lockkit-zookeeper-session")\n',
        "",
        (f"{ZK_TESTS}/test_zookeeper_session.py::test_an_expired_session_reaches_the_holder",),
    ),
    Mutant(
        "zookeeper misses a connection the server closed",
        ZK_SESSION,
        "                link.notice_closed_connection()\n",
        "",
        (f"{ZK_TESTS}/test_zookeeper_session.py::test_an_expired_session_reaches_the_holder",),
    ),
    Mutant(
        "etcd takes the lock with a key still ahead of its own",
        ETCD_BACKEND,
        "        if len(newest) < 2:",
        "        if len(newest) < 3:",
        (f"{CONFORMANCE}[etcd-check_mutual_exclusion]",),
    ),
    Mutant(
        "etcd cancelled waiter leaves its key behind",
        ETCD_BACKEND,
        '            await link.txn(txn((), (op_delete(entry.key),)), "leave a lock\'s queue")\n',
        "            await anyio.sleep(0)\n",
        (
            f"{ETCD_TESTS}/test_etcd_cancel.py"
            "::test_a_thousand_cancelled_waiters_leave_no_key_and_no_lease",
        ),
    ),
    Mutant(
        "etcd ownership reads are serializable (answered without a quorum)",
        ETCD_DRIVER,
        "            serializable=False,",
        "            serializable=True,",
        (f"{ETCD_TESTS}/test_etcd_etcetra.py::test_ownership_checks_need_a_quorum",),
    ),
    Mutant(
        "etcd ignores a watch the server cancelled after a compaction",
        ETCD_DRIVER,
        "            watch.on_reset(watch.key)\n            return",
        "            return",
        (
            f"{ETCD_TESTS}/test_etcd_failover.py"
            "::test_compaction_during_a_long_wait_does_not_lose_the_watch",
        ),
    ),
    Mutant(
        "zookeeper guard decides without the fence it read",
        "lockkit/guards/zookeeper.py",
        "            check_fence(resource, fence, token)  # StaleTokenError: nothing written",
        "            check_fence(resource, None, token)",
        (f"{GUARD_CONFORMANCE}[zookeeper-check_older_token_refused]",),
    ),
    Mutant(
        "zookeeper guard takes a multi that lost a race for a write",
        "lockkit/guards/zookeeper.py",
        "            if failed is None:\n",
        "            if failed is None or failed < ours:\n",
        (f"{GUARD_CONFORMANCE}[zookeeper-check_concurrent_writers]",),
    ),
    Mutant(
        "etcd guard decides without the fence it read",
        "lockkit/guards/etcd.py",
        "            check_fence(resource, fence, token)  # StaleTokenError: nothing written",
        "            check_fence(resource, None, token)",
        (f"{GUARD_CONFORMANCE}[etcd-check_older_token_refused]",),
    ),
    Mutant(
        "etcd guard's Txn compares nothing of what it read",
        "lockkit/guards/etcd.py",
        "txn([*compares, *compare], ",
        "txn([*compare], ",
        (f"{GUARD_CONFORMANCE}[etcd-check_concurrent_writers]",),
    ),
    Mutant(
        "sql guards accept an equal token from another acquisition",
        "lockkit/guards/sql.py",
        '    "AND (g.token < :token OR (g.token = :token AND g.owner = :owner))"',
        '    "AND (g.token < :token OR g.token = :token)"',
        (
            f"{GUARD_CONFORMANCE}[postgres-check_equal_token_of_another_acquisition_refused]",
            f"{GUARD_CONFORMANCE}[sqlite-check_equal_token_of_another_acquisition_refused]",
        ),
    ),
    Mutant(
        "sql guards accept a token of another lock",
        "lockkit/guards/sql.py",
        '    "g.lock_name = :lock AND g.backend = :backend "',
        '    "TRUE "',
        (
            f"{GUARD_CONFORMANCE}[postgres-check_token_of_another_lock_refused]",
            f"{GUARD_CONFORMANCE}[sqlite-check_token_of_another_lock_refused]",
        ),
    ),
    Mutant(
        "redis guard accepts an equal token of another acquisition",
        "lockkit/_lua/guard_fence.lua",
        "    if order > 0 or (order == 0 and fence[2] == owner) then",
        "    if order >= 0 then",
        (f"{GUARD_CONFORMANCE}[redis-check_equal_token_of_another_acquisition_refused]",),
    ),
    Mutant(
        "redis guard accepts a token of another lock",
        "lockkit/_lua/guard_fence.lua",
        "  if fence[3] == lock and fence[4] == backend then",
        "  if true then",
        (f"{GUARD_CONFORMANCE}[redis-check_token_of_another_lock_refused]",),
    ),
    Mutant(
        "redlock quorum one short of a majority",
        REDLOCK_BACKEND,
        "        self.quorum = len(masters) // 2 + 1\n",
        "        self.quorum = len(masters) // 2\n",
        (f"{REDLOCK_FAULTS}::test_three_masters_down_refuse_and_leave_nothing",),
    ),
    Mutant(
        "redlock takes the maximum token without writing it back",
        REDLOCK_BACKEND,
        "            carried = sum(1 for t in granted.values() if t == top)\n",
        "            carried = len(granted)\n",
        (f"{REDLOCK_FAULTS}::test_tokens_rise_across_holders_with_different_majorities",),
    ),
)


def run(mutant: Mutant, python: str) -> tuple[bool, float, str]:
    """Apply ``mutant``, run its tests; True if they failed (the mutant was caught)."""
    path = ROOT / mutant.path
    original = path.read_text()
    count = original.count(mutant.old)
    if count != 1:
        raise SystemExit(
            f"mutant {mutant.name!r}: its source text occurs {count} times in {mutant.path}; "
            "update scripts/mutants.py to the current code"
        )
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        result = subprocess.run(
            [
                python,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "--timeout=60",
                *mutant.tests,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        path.write_text(original)
    tail = (result.stdout.strip().splitlines() or [""])[-1]
    # 1: tests failed. Anything else (passed, none collected, a bad node id) is not a catch
    return result.returncode == 1, time.monotonic() - started, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or any(s in m.name for s in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.name}  ({m.path})")
        return 0
    survivors = []
    for m in chosen:
        caught, seconds, tail = run(m, sys.executable)
        print(f"{'caught  ' if caught else 'SURVIVED'} {seconds:5.1f}s  {m.name}  [{tail}]")
        if not caught:
            survivors.append(m.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
