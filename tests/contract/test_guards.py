"""The guard conformance suite, once per guard. Adding a guard is one ``pytest.param``:
a function that, given the test's request, returns a factory of guards sharing one
storage."""

from __future__ import annotations

from typing import Any

import pytest

from lockkit.abc import Guard
from lockkit.guards.memory import MemoryGuard
from lockkit.testing import GUARD_CHECKS, GuardFactory, check_guard


def _memory(request: pytest.FixtureRequest) -> GuardFactory:
    guard: Guard[Any] = MemoryGuard()  # its storage is the object: every "new" guard is it
    return lambda: guard


def _zookeeper(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.zookeeper import ZooKeeperGuard

    url = request.getfixturevalue("zookeeper_server").url
    return lambda: ZooKeeperGuard.from_url(url)


def _zookeeper_ensemble(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.zookeeper import ZooKeeperGuard

    url = request.getfixturevalue("zookeeper_ensemble").url
    return lambda: ZooKeeperGuard.from_url(url)


def _redis(fixture: str) -> Any:
    def make(request: pytest.FixtureRequest) -> GuardFactory:
        from lockkit.guards.redis import RedisGuard

        url = request.getfixturevalue(fixture).url
        return lambda: RedisGuard.from_url(url)

    return make


def _postgres(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.sql import PostgresGuard

    url = request.getfixturevalue("postgres_server").url
    return lambda: PostgresGuard(url)


def _sqlite(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.sql import SqliteGuard

    path = request.getfixturevalue("tmp_path") / "guard.db"
    return lambda: SqliteGuard(path)


def _etcd(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.etcd import EtcdGuard

    url = request.getfixturevalue("etcd_server").url
    return lambda: EtcdGuard.from_url(url)


def _etcd_cluster(request: pytest.FixtureRequest) -> GuardFactory:
    from lockkit.guards.etcd import EtcdGuard

    url = request.getfixturevalue("etcd_cluster").url
    return lambda: EtcdGuard.from_url(url)


#: One row per guard: how to get a factory of guards over one storage, marks, id.
GUARDS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_postgres, marks=pytest.mark.postgres, id="postgres"),
    pytest.param(_sqlite, id="sqlite"),
    pytest.param(_redis("redis_server"), marks=pytest.mark.redis, id="redis"),
    pytest.param(
        _redis("redis_cluster"),
        marks=[pytest.mark.redis, pytest.mark.cluster],
        id="redis_cluster",
    ),
    pytest.param(_zookeeper, marks=pytest.mark.zookeeper, id="zookeeper"),
    pytest.param(_zookeeper_ensemble, marks=pytest.mark.zookeeper, id="zookeeper-ensemble"),
    pytest.param(_etcd, marks=pytest.mark.etcd, id="etcd"),
    pytest.param(_etcd_cluster, marks=pytest.mark.etcd, id="etcd-cluster"),
]


@pytest.fixture(params=GUARDS)
def guards(request: pytest.FixtureRequest) -> GuardFactory:
    factory: GuardFactory = request.param(request)
    return factory


@pytest.mark.parametrize(
    ("check", "needs"), GUARD_CHECKS, ids=[c.__name__ for c, _ in GUARD_CHECKS]
)
async def test_guard_conformance(guards: GuardFactory, check: Any, needs: Any) -> None:
    async with guards() as probe:
        if needs is not None and needs not in probe.capabilities:
            pytest.skip(f"{type(probe).__name__} does not declare {needs}")
    await check(guards, "lockkit-guard-test:")


async def test_check_guard_runs_every_declared_check() -> None:
    guard: Guard[Any] = MemoryGuard()
    ran = await check_guard(lambda: guard)
    assert len(ran) == len(GUARD_CHECKS)
