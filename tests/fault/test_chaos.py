"""The chaos run, short: every server backend for a few seconds of faults, 0 violations.

``make chaos`` runs the same thing for longer; a violation here prints the seed and the
history slice that shows it (rerun with ``python -m tests.fault.chaos --backend B
--seconds S --seed N``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fault.chaos import run_backend

SECONDS = float(os.environ.get("LOCKKIT_CHAOS_SECONDS", "15"))
SEED = int(os.environ.get("LOCKKIT_CHAOS_SEED", "0")) or None

pytestmark = [pytest.mark.fault, pytest.mark.cluster]

_MARKS = {
    "redis": pytest.mark.redis,
    "redlock": pytest.mark.redlock,
    "cluster": pytest.mark.redis,
    "sentinel": pytest.mark.redis,
}

BACKENDS = ("redis", "redlock", "zookeeper", "etcd", "sentinel", "cluster")


@pytest.mark.timeout(int(SECONDS) + 150)
@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=_MARKS.get(b) or getattr(pytest.mark, b)) for b in BACKENDS],
)
async def test_chaos_short_run_has_no_violation(backend: str, tmp_path: Path) -> None:
    seed = SEED if SEED is not None else int.from_bytes(os.urandom(3), "big")
    report, meta = await run_backend(backend, SECONDS, seed, 1.0, 4, tmp_path)
    problems = "\n".join(v.render(seed) for v in report.violations)
    assert report.ok, f"chaos on {backend}, seed {seed}, faults {meta['faults']}:\n{problems}"
    assert report.acquisitions > 0 and report.accepted_writes > 0
