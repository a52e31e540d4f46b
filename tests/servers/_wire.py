"""Tiny blocking protocol clients the harness uses to probe and steer its servers.

They only speak what readiness checks and cluster bookkeeping need: RESP for Redis,
ZooKeeper's four-letter words, and Kafka's ApiVersions request. Tests use the real
async clients (redis-py, aiozk, etcetra, aiokafka) instead.
"""

from __future__ import annotations

import socket
import struct
from typing import Final, TypeAlias

from ._base import LOOPBACK, ServerError

__all__ = (
    "RespClient",
    "RespError",
    "RespValue",
    "four_letter_word",
    "info",
    "kafka_api_versions",
    "resp_call",
)

TIMEOUT: Final = 2.0

RespValue: TypeAlias = "str | int | bytes | list[RespValue] | None"


class RespError(ServerError):
    """An error reply (``-ERR ...``) from a Redis server."""


class RespClient:
    """One blocking RESP2 connection, for short administrative exchanges."""

    def __init__(self, port: int, host: str = LOOPBACK, timeout: float = TIMEOUT) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def call(self, *args: str | int | bytes) -> RespValue:
        """Send one command and read its reply; error replies raise :class:`RespError`."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> RespValue:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed in the middle of a reply")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise RespError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(body)
            if count < 0:
                return None
            return [self._read() for _ in range(count)]
        raise ServerError(f"unexpected RESP reply {line!r}")


def resp_call(port: int, *args: str | int | bytes) -> RespValue:
    """Open a connection, run one command, close."""
    with RespClient(port) as client:
        return client.call(*args)


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` as a dict."""
    reply = resp_call(port, "INFO", section)
    if not isinstance(reply, bytes):
        raise ServerError(f"unexpected INFO reply {reply!r}")
    fields: dict[str, str] = {}
    for line in reply.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def four_letter_word(port: int, word: str, host: str = LOOPBACK) -> str:
    """Send a ZooKeeper four-letter command (``srvr``, ``mntr``, ``ruok``...) and read
    the reply until the server closes the connection."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(word.encode())
        chunks: list[bytes] = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def kafka_api_versions(port: int, host: str = LOOPBACK) -> dict[int, tuple[int, int]]:
    """Send an ApiVersions v0 request; return ``{api_key: (min_version, max_version)}``.

    A broker accepts connections only once it has started (caught up with the metadata
    log and registered), so an answer here means the broker serves requests.
    """
    client_id = b"lockkit-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
        payload = _recv_exactly(sock, size)
    correlation, error, count = struct.unpack_from(">ihi", payload)
    if correlation != 1:
        raise ServerError(f"ApiVersions answered correlation id {correlation}, expected 1")
    if error != 0:
        raise ServerError(f"ApiVersions failed with Kafka error code {error}")
    versions: dict[int, tuple[int, int]] = {}
    for index in range(count):
        key, low, high = struct.unpack_from(">hhh", payload, 10 + 6 * index)
        versions[key] = (low, high)
    return versions


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed in the middle of a Kafka response")
        data += chunk
    return bytes(data)
