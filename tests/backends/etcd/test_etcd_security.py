"""Authentication and TLS against real etcd members of the test's own pool: a member
with ``auth enable`` (user ``root``), and a member serving TLS with a private CA that
requires client certificates."""

from __future__ import annotations

import logging
import secrets
import uuid

import anyio
import pytest

import lockkit
from lockkit.backends.etcd import EtcdBackend
from tests.servers import ServerPool
from tests.servers.etcd import EtcdTls

pytestmark = pytest.mark.etcd


# -- authentication --------------------------------------------------------------------


async def test_user_and_password_lock_end_to_end(servers: ServerPool) -> None:
    """``etcd://root:password@host``: the client logs in, locks, gets a revision token,
    releases; the key was written under the lock prefix while held. Without
    credentials, entering the client is refused."""
    server = servers.etcd(password=f"pw-{secrets.token_hex(8)}")
    name = f"auth-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(server.url) as locks:
        async with locks.lock(name, ttl=10) as token:
            assert int(token) > 0
            keys = await anyio.to_thread.run_sync(
                lambda: server.ctl("get", "--prefix", "--keys-only", f"lockkit/{name}/")
            )
            assert keys.split() == [f"lockkit/{name}/{locks.backend.lease_id:x}"]  # type: ignore[attr-defined]
        assert (await locks.inspect(name)).holder is None
    # without credentials entering is refused (a lease needs none: the lock prefix is
    # read on entering, which does)
    with pytest.raises(lockkit.ConfigurationError, match="requires authentication"):
        async with lockkit.connect(f"etcd://{server.hostport}"):
            pytest.fail("entered without credentials")


async def test_a_wrong_password_is_refused_on_entering(servers: ServerPool) -> None:
    """A refused password is a ConfigurationError raised by ``async with connect()``,
    naming the user, never the password."""
    server = servers.etcd(password=f"pw-{secrets.token_hex(8)}")
    wrong = f"wrong-{secrets.token_hex(8)}"
    client = lockkit.connect(f"etcd://root:{wrong}@{server.hostport}")
    with pytest.raises(lockkit.ConfigurationError, match="credentials") as info:
        async with client:
            pytest.fail("entered a client whose password is refused")
    assert "root" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)


async def test_the_password_never_shows(
    servers: ServerPool, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG (lockkit, grpc, asyncio): the password appears in no log
    record, not in ``repr()`` of client and backend, nor in the error of a refused
    password or of a member that went away."""
    password = f"pw-{secrets.token_hex(8)}"
    server = servers.etcd(password=password)
    caplog.set_level(logging.DEBUG)  # the root logger: every logger propagates to it
    for name in ("lockkit", "grpc", "grpc._cython.cygrpc", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    texts: list[str] = []
    async with lockkit.connect(server.url, timeout=1) as locks:
        texts += [repr(locks), repr(locks.backend), str(locks.backend.__dict__)]
        async with locks.lock("shown", ttl=5) as token:
            texts.append(repr(token))
        await anyio.to_thread.run_sync(server.stop)
        with pytest.raises(lockkit.LockError) as down:
            async with locks.lock("shown", ttl=5, timeout=0):
                pass
        texts += [str(down.value), repr(down.value)]
        await anyio.to_thread.run_sync(server.start)
    with pytest.raises(lockkit.ConfigurationError) as refused:
        async with lockkit.connect(f"etcd://root:{password}x@{server.hostport}"):
            pass
    texts += [str(refused.value), repr(refused.value)]
    assert caplog.records, "nothing was logged at DEBUG"
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    leaked = [text for text in texts if password in text]
    assert not leaked


async def test_the_client_logs_in_again_after_a_restart(servers: ServerPool) -> None:
    """etcd 3.4 keeps simple auth tokens in memory: a restarted member has forgotten the
    client's token. The client keeps working: its lease is kept alive across the
    restart, a lock is taken and released (unary calls log in again), and a waiter is
    woken within a moment of the release, not by the fallback poll: etcd refuses every
    watch on the reopened stream with the old token (watch id -1), and the stream logs
    in again and reopens."""
    server = servers.etcd(password=f"pw-{secrets.token_hex(8)}")
    name = f"relogin-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(server.url, lease_ttl=4) as a, lockkit.connect(server.url) as b:
        async with a.lock(name, ttl=5):
            pass
        backend = a.backend
        assert isinstance(backend, EtcdBackend)
        lease = backend.lease_id
        await anyio.to_thread.run_sync(server.restart)
        # longer than the lease, with no call that would log in again: only a
        # keep-alive stream that logs in again itself keeps the lease
        await anyio.sleep(6)
        assert backend.lease_id == lease
        async with a.lock(name, ttl=5) as token:
            assert int(token) > 0
        got: list[float] = []

        async def wait() -> None:
            async with a.lock(name, ttl=5, timeout=10):
                got.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            async with b.lock(name, ttl=10):
                tg.start_soon(wait)
                with anyio.fail_after(5):
                    while (await b.inspect(name)).waiters < 1:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                await anyio.sleep(0.3)  # the waiter's watch is set
                released = anyio.current_time()
        assert got and got[0] - released < 0.5
        assert a.statistics().backend.subscriptions >= 1


# -- TLS -----------------------------------------------------------------------------------


def _url(port: int, ca: object, cert: object | None = None, key: object | None = None) -> str:
    query = f"ssl_ca_certs={ca}"
    if cert is not None:
        query += f"&ssl_certfile={cert}&ssl_keyfile={key}"
    return f"etcds://127.0.0.1:{port}?{query}"


async def test_tls_with_a_client_certificate_locks(servers: ServerPool) -> None:
    """``etcds://127.0.0.1:PORT`` with the private CA and a client certificate: the
    certificate is checked against the IP address, and locks work."""
    server = servers.etcd(tls=True)
    assert server.tls is not None
    url = _url(server.port, server.tls.ca, server.tls.client_cert, server.tls.client_key)
    name = f"tls-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        async with a.lock(name, ttl=10) as first:
            assert (await b.inspect(name)).holder is not None
        async with b.lock(name, ttl=10, timeout=5) as second:
            assert int(second) > int(first)


async def test_tls_to_several_members_given_by_address(servers: ServerPool) -> None:
    """Two addresses in an etcds:// URL (one not listening): the certificate is checked
    against the first address, not the gRPC target ``ipv4:a,b`` (which no certificate
    names), and the member that listens serves."""
    server = servers.etcd(tls=True)
    assert server.tls is not None
    url = f"etcds://127.0.0.1:{server.port},127.0.0.1:1?{server.tls.query}"
    async with lockkit.connect(url) as locks:
        async with locks.lock(f"tls-multi-{uuid.uuid4().hex[:8]}", ttl=5) as token:
            assert int(token) > 0


async def test_tls_without_a_client_certificate_is_refused(servers: ServerPool) -> None:
    """The member requires a client certificate: without one, or with one from another
    CA, entering the client is a ConfigurationError that names the TLS options (the
    member answered; trying again changes nothing, as with a refused password)."""
    server = servers.etcd(tls=True)
    assert server.tls is not None
    other = EtcdTls.create(servers.root / "other-ca")
    for url in (
        _url(server.port, server.tls.ca),
        _url(server.port, server.tls.ca, other.client_cert, other.client_key),
    ):
        with pytest.raises(lockkit.ConfigurationError, match="TLS handshake") as info:
            async with lockkit.connect(url, connect_timeout=5):
                pytest.fail("entered without a certificate the server trusts")
        assert "ssl_certfile" in str(info.value)


async def test_tls_with_the_wrong_ca_is_refused(servers: ServerPool) -> None:
    """The server's certificate is not signed by the CA the client trusts: a
    ConfigurationError naming ssl_ca_certs, raised on entering."""
    server = servers.etcd(tls=True)
    assert server.tls is not None
    other = EtcdTls.create(servers.root / "other-ca")
    url = _url(server.port, other.ca, server.tls.client_cert, server.tls.client_key)
    with pytest.raises(lockkit.ConfigurationError, match="ssl_ca_certs") as info:
        async with lockkit.connect(url, connect_timeout=5):
            pytest.fail("trusted a server certificate from an unknown CA")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


async def test_plain_etcd_against_a_tls_member_says_to_use_etcds(servers: ServerPool) -> None:
    """``etcd://`` to a member serving TLS: the member closes the connection at once.
    That is BackendUnavailable (a member going away looks the same), and the message
    says to use etcds://."""
    server = servers.etcd(tls=True)
    with pytest.raises(lockkit.BackendUnavailable, match="etcds://"):
        async with lockkit.connect(f"etcd://{server.hostport}", connect_timeout=5):
            pytest.fail("talked plain gRPC to a TLS port")
