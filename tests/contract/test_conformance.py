"""The conformance suite, once per backend. Adding a backend is one ``pytest.param``."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

import lockkit
from lockkit.testing import CHECKS, ClientFactory

BACKENDS = [
    pytest.param("memory", id="memory"),
]


def _memory_url(request: pytest.FixtureRequest) -> str:
    return f"memory://conformance-{uuid.uuid4().hex[:8]}"


URLS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "memory": _memory_url,
}


@pytest.fixture(params=BACKENDS)
def factory(request: pytest.FixtureRequest) -> ClientFactory:
    url = URLS[request.param](request)
    return lambda: lockkit.connect(url)


@pytest.mark.parametrize(("check", "needs"), CHECKS, ids=[c.__name__ for c, _ in CHECKS])
async def test_conformance(factory: ClientFactory, check, needs) -> None:
    if needs is not None and needs not in type(factory().backend).capabilities:
        pytest.skip(f"backend does not declare {needs}")
    await check(factory, f"t-{uuid.uuid4().hex[:6]}:")
