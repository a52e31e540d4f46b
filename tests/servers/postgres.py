"""PostgreSQL test server: one ``postgres`` on a free loopback port.

Debian's ``postgresql`` package (``make deps``) puts the server under
``/usr/lib/postgresql/N/bin``. PostgreSQL refuses to run as root, so ``initdb`` and
``postgres`` run as the package's ``postgres`` user (``setpriv``) when the tests run as
root, in a data directory inside the server's workdir, which is handed to that user.
The cluster trusts local connections, skips fsync (test data need not survive a power
cut) and has a database ``lockkit``; :attr:`PostgresServer.url` is ``postgresql://postgres@127.0.0.1:PORT/lockkit``.

The process the harness holds is the postmaster itself (``setpriv`` execs it), started
in its own process group with its backends: :meth:`PostgresServer.pause` freezes the
whole group, :meth:`PostgresServer.stop` asks for a fast shutdown (SIGINT), which does
not wait for clients to disconnect.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import signal
import stat
import subprocess
import threading
from pathlib import Path
from typing import Final

from ._base import LOOPBACK, MissingServerError, ProcessServer, ServerError, require_binary

__all__ = ("DATABASE", "PostgresServer", "postgres_bin", "psql")

#: The database the tests (and the docs' examples) use.
DATABASE: Final = "lockkit"
#: The system user Debian's package creates; the server runs as it.
SYSTEM_USER: Final = "postgres"


@functools.cache
def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``postgres`` and ``initdb``."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        match = re.fullmatch(r"\d+", candidate.parent.name)
        if match and (candidate / "postgres").exists() and (candidate / "initdb").exists():
            found.append((int(candidate.parent.name), candidate))
    if not found:
        raise MissingServerError("PostgreSQL (no /usr/lib/postgresql/N/bin/postgres)")
    return max(found)[1]


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise MissingServerError(f"PostgreSQL (no {SYSTEM_USER!r} system user)") from None


def psql(url: str, sql: str, *, timeout: float = 10.0) -> str:
    """Run ``sql`` with ``psql`` against ``url``; the unaligned, tuples-only output."""
    try:
        result = subprocess.run(
            [str(postgres_bin() / "psql"), "-XAtv", "ON_ERROR_STOP=1", "-c", sql, url],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "3"},
        )
    except subprocess.TimeoutExpired:
        raise ServerError(f"psql {sql!r} timed out after {timeout:g}s") from None
    if result.returncode != 0:
        raise ServerError(f"psql {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class PostgresServer(ProcessServer):
    """One PostgreSQL cluster, made with ``initdb`` on the first start."""

    kind = "postgres"
    start_timeout = 30.0

    def __init__(self, name: str, workdir: Path, *, config: dict[str, str] | None = None):
        super().__init__(name, workdir)
        self._bin = postgres_bin()
        self._user = _system_user()
        self._setpriv = require_binary("setpriv")
        self.config = dict(config or {})
        self._database_made = False

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def admin_url(self) -> str:
        """The ``postgres`` database, which always exists."""
        return f"postgresql://{SYSTEM_USER}@{self.host}:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{SYSTEM_USER}@{self.host}:{self.port}/{DATABASE}"

    def _as_postgres(self, *argv: str) -> list[str]:
        if os.geteuid() != 0:  # not root: the server runs as whoever we are
            return list(argv)
        user = self._user
        flags = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
        # After the uid change the kernel forgets a parent-death signal set before it, so
        # setpriv sets it again; only from the main thread, as the harness does.
        if threading.current_thread() is threading.main_thread():
            flags.append("--pdeathsig=KILL")
        return [self._setpriv, *flags, "--", *argv]

    def _hand_over(self) -> None:
        """Let the ``postgres`` user reach and own the workdir."""
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return
        user = self._user
        os.chown(self.workdir, user.pw_uid, user.pw_gid)
        for parent in self.workdir.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        os.chown(self.socket_dir, user.pw_uid, user.pw_gid)

    def prepare(self) -> None:
        self._hand_over()
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            self._as_postgres(
                str(self._bin / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SYSTEM_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ServerError(f"initdb failed for {self.name}:\n{result.stdout}{result.stderr}")

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": LOOPBACK,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_min_messages": "warning",
            **self.config,
        }
        options = [item for key, value in settings.items() for item in ("-c", f"{key}={value}")]
        return self._as_postgres(
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-k",
            str(self.socket_dir),
            "-p",
            str(self.port),
            *options,
        )

    def probe(self) -> bool:
        return psql(self.admin_url, "SELECT 1", timeout=5) == "1"

    def start(self, *, wait: bool = True) -> None:
        super().start(wait=wait)
        if wait and not self._database_made:
            psql(self.admin_url, f"CREATE DATABASE {DATABASE}")
            self._database_made = True

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, not waited for."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        if self._paused:
            self.resume()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the postmaster and its backends."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP to the postmaster and every backend: nothing answers."""
        process = self._require_running("pause")
        os.killpg(process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        process = self._require_running("resume")
        os.killpg(process.pid, signal.SIGCONT)
        self._paused = False
