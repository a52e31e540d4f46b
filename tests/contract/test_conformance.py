"""The conformance suite, once per backend. Adding a backend is one ``pytest.param``."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

import lockkit
from lockkit.testing import CHECKS, ClientFactory, check_backend


def _memory(request: pytest.FixtureRequest) -> str:
    return f"memory://conformance-{uuid.uuid4().hex[:8]}"


def _server(fixture: str) -> Callable[[pytest.FixtureRequest], str]:
    def url(request: pytest.FixtureRequest) -> str:
        return str(request.getfixturevalue(fixture).url)

    return url


#: One row per backend: how to get a URL whose clients share locks, its marks, its id.
BACKENDS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_server("redis_server"), marks=pytest.mark.redis, id="redis"),
    pytest.param(
        _server("redis_sentinel"),
        marks=[pytest.mark.redis, pytest.mark.cluster],
        id="redis-sentinel",
    ),
    pytest.param(
        _server("redis_cluster"),
        marks=[pytest.mark.redis, pytest.mark.cluster],
        id="redis-cluster",
    ),
    pytest.param(
        _server("redis_masters"),
        marks=[pytest.mark.redis, pytest.mark.redlock, pytest.mark.cluster],
        id="redlock",
    ),
    pytest.param(_server("zookeeper_server"), marks=pytest.mark.zookeeper, id="zookeeper"),
    pytest.param(
        _server("zookeeper_ensemble"),
        marks=[pytest.mark.zookeeper, pytest.mark.cluster],
        id="zookeeper-ensemble",
    ),
    pytest.param(_server("etcd_server"), marks=pytest.mark.etcd, id="etcd"),
    pytest.param(
        _server("etcd_cluster"),
        marks=[pytest.mark.etcd, pytest.mark.cluster],
        id="etcd-cluster",
    ),
]


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> ClientFactory:
    url = request.param(request)
    return lambda: lockkit.connect(url)


@pytest.mark.parametrize(("check", "needs"), CHECKS, ids=[c.__name__ for c, _ in CHECKS])
async def test_conformance(factory: ClientFactory, check, needs) -> None:
    if needs is not None and needs not in type(factory().backend).capabilities:
        pytest.skip(f"backend does not declare {needs}")
    await check(factory, f"t-{uuid.uuid4().hex[:6]}:")


async def test_check_backend_runs_the_whole_suite() -> None:
    url = f"memory://check-backend-{uuid.uuid4().hex[:8]}"
    skipped = await check_backend(lambda: lockkit.connect(url))
    assert skipped == []
