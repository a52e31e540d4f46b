"""Digest credentials: sent on every connection, ACLs on every node, never in a log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from aiozk.exc import NoAuth

import lockkit
from lockkit import ConfigurationError

from .helpers import raw_client

pytestmark = pytest.mark.zookeeper

SECRET = "s3cr3t-" + uuid.uuid4().hex[:8]


@pytest.fixture
def every_logger_at_debug() -> Iterator[None]:
    """Every logger (aiozk's payload logger included, which sets itself to INFO) at DEBUG."""
    manager = logging.root.manager
    saved = {
        name: lg.level for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    root_level = logging.root.level
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        logging.root.setLevel(root_level)


async def test_credentials_never_reach_a_log(
    servers, caplog: pytest.LogCaptureFixture, every_logger_at_debug: None
) -> None:
    """With every logger at DEBUG, a client with digest credentials connects, locks,
    loses its connection (the server restarts) and authenticates again: the password
    appears in no log record, repr or error."""
    server = servers.zookeeper()
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("zookeeper://", f"zookeeper://alice:{SECRET}@")
    client = lockkit.connect(url, timeout=2)
    assert SECRET not in repr(client) and SECRET not in repr(client.backend)
    async with client as locks:
        async with locks.lock("audited", ttl=30):
            pass
        server.restart()
        async with locks.lock("audited", ttl=30, timeout=30):
            pass
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "AuthRequest" in logged or "hidden by lockkit" in logged, "nothing was logged"
    assert SECRET not in logged
    assert SECRET.encode().hex() not in logged


async def test_nodes_belong_to_the_authenticated_user(servers) -> None:
    """Nodes carry an ACL for their creator only: another user cannot take the lock
    (ConfigurationError naming the cause), while the owner can again after the server
    restarted (its credentials are sent on the new connection)."""
    server = servers.zookeeper()
    alice = server.url.replace("zookeeper://", f"zookeeper://alice:{SECRET}@")
    mallory = server.url.replace("zookeeper://", "zookeeper://mallory:guess@")
    async with lockkit.connect(alice, timeout=2) as locks:
        async with locks.lock("private", ttl=30):
            own = locks.backend._link.client  # type: ignore[attr-defined]
            acl = await own.get_acl("/lockkit/private")  # needs READ: authenticated
            assert [(a.id.scheme, a.perms) for a in acl] == [("digest", 31)]
            assert acl[0].id.id.startswith("alice:")
            async with raw_client(server.hosts) as raw:  # anyone else: refused
                with pytest.raises(NoAuth):
                    await raw.get_children("/lockkit/private")
        with pytest.raises(ConfigurationError, match="refused access"):
            async with lockkit.connect(mallory, timeout=2) as other:
                await other.lock("private", timeout=0).acquire()
        server.restart()
        async with locks.lock("private", ttl=30, timeout=30):  # authenticated again
            pass


def test_tls_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        lockkit.connect("zookeeper://localhost", ssl_ca_certs="/ca.pem")
