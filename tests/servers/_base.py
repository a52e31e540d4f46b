"""Process handles: one real server process on loopback ports in its own directory.

A :class:`ProcessServer` owns a child process and its log file. It starts on free
loopback ports, waits for a real protocol round trip before it counts as ready, and can
be stopped, killed, paused (SIGSTOP), resumed and restarted on the same ports with the
same data directory, which is what fault tests need. :class:`ExternalServer` wraps a
server somebody else runs (``LOCKKIT_TEST_*`` variables) and refuses fault operations.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Final, Generic, TypeVar

import anyio.to_thread

__all__ = (
    "LOOPBACK",
    "ExternalServer",
    "ExternalServerError",
    "MissingServerError",
    "ProcessServer",
    "ServerError",
    "ServerHandle",
    "ServerStartError",
    "free_ports",
    "services_dir",
    "wait_until",
)

LOOPBACK: Final = "127.0.0.1"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES: Final = 60

T = TypeVar("T")


class ServerError(RuntimeError):
    """Something went wrong with a test server; the message carries its log tail."""


class MissingServerError(ServerError):
    """A server binary or its jars are not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not installed: run `make deps` (or `bash scripts/servers.sh install`) "
            "to install the test servers"
        )


class ServerStartError(ServerError):
    """A server process exited or did not become ready in time."""


class ExternalServerError(ServerError):
    """A fault operation was asked of a server these tests did not start."""


def services_dir() -> Path:
    """Where ``scripts/servers.sh`` caches jars (``LOCKKIT_SERVICES_DIR`` overrides)."""
    return Path(os.environ.get("LOCKKIT_SERVICES_DIR", REPO_ROOT / ".services"))


def require_binary(name: str) -> str:
    """Absolute path of executable ``name``, or :class:`MissingServerError`."""
    path = shutil.which(name)
    if path is None:
        raise MissingServerError(f"`{name}`")
    return path


def require_jars(name: str) -> str:
    """A ``java -cp`` entry for the jars ``scripts/servers.sh`` cached for ``name``."""
    libs = services_dir() / name / "libs"
    if not libs.is_dir() or not any(libs.glob("*.jar")):
        raise MissingServerError(f"{name} (no jars in {libs})")
    require_binary("java")
    return str(libs / "*")


# --- ports ---------------------------------------------------------------------------

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago.

    All are bound at once (so they differ) and never handed out twice by this process;
    another process can still take one before the server binds it, which is why a start
    that fails with "address already in use" is retried on fresh ports.
    """
    with _ports_lock:
        sockets: list[socket.socket] = []
        ports: list[int] = []
        try:
            while len(ports) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
                if port not in _handed_out:
                    ports.append(port)
        finally:
            for sock in sockets:
                sock.close()
        _handed_out.update(ports)
        return ports


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something other than ``None`` (or ``False``).

    Exceptions from ``check`` count as "not yet"; the last one is chained to the
    :class:`ServerError` raised after ``timeout`` seconds, whose message ends with
    ``context()`` (usually log tails).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    delay = interval
    while True:
        try:
            result = check()
        except (OSError, ServerError, ValueError) as exc:
            last = exc
        else:
            if result is not None and result is not False:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            extra = f"\n{context()}" if context else ""
            raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# --- the process registry: nothing outlives the test run ------------------------------

_live: weakref.WeakSet[ProcessServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()


_PR_SET_PDEATHSIG: Final = 1
try:
    # Resolved here, not in the child: after fork() only async-signal-safe work is wise.
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL the child if pytest dies without running its finalizers."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


# --- handles -------------------------------------------------------------------------


class ServerHandle(abc.ABC):
    """What every single server offers, whether the tests started it or not."""

    #: Short name of the kind of server, for messages ("redis", "zookeeper", ...).
    kind: ClassVar[str] = "server"

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abc.abstractmethod
    def host(self) -> str:
        """Host the clients connect to (always ``127.0.0.1`` for local servers)."""

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """Client port."""

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self.host, self.port)

    @property
    def hostport(self) -> str:
        """``"host:port"``."""
        return f"{self.host}:{self.port}"

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A lockkit URL for this server, e.g. ``redis://127.0.0.1:PORT/0``."""

    @property
    def log_path(self) -> Path | None:
        """The server's log file, ``None`` when the tests do not own the process."""
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log, headed by the server's name."""
        return f"--- {self.name}: no log (not started by the tests)"

    @abc.abstractmethod
    def ping(self) -> None:
        """One protocol round trip; raises :class:`OSError` or :class:`ServerError`."""

    @property
    def is_running(self) -> bool:
        """Whether the process exists (paused counts as running)."""
        return True

    @property
    def is_paused(self) -> bool:
        return False

    @property
    def needs_heal(self) -> bool:
        """Whether a fault left this server stopped or paused."""
        return False

    def heal(self) -> None:  # noqa: B027 - nothing to do unless the tests own the process
        """Bring the server back to serving after a fault: resume it, or restart it."""

    # Fault operations: ExternalServer refuses them.

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self, timeout: float = 20.0) -> None: ...

    @abc.abstractmethod
    def kill(self) -> None: ...

    @abc.abstractmethod
    def pause(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def restart(self) -> None: ...

    async def astart(self) -> None:
        """:meth:`start` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(self.start)

    async def astop(self) -> None:
        """:meth:`stop` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(self.stop)

    async def arestart(self) -> None:
        """:meth:`restart` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(self.restart)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.hostport}>"


class ExternalServer(ServerHandle):
    """A server that somebody else runs, named by a ``LOCKKIT_TEST_*`` variable."""

    def __init__(self, name: str, host: str, port: int, url: str, variable: str) -> None:
        super().__init__(name)
        self._host = host
        self._port = port
        self._url = url
        self.variable = variable

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return self._url

    def _refuse(self, operation: str) -> ServerError:
        return ExternalServerError(
            f"cannot {operation} {self.name} at {self.hostport}: it comes from ${self.variable} "
            "and these tests do not own its process; fault tests need servers the tests "
            f"start themselves (unset {self.variable}, or use the `servers` fixture)"
        )

    def start(self) -> None:
        raise self._refuse("start")

    def stop(self, timeout: float = 20.0) -> None:
        raise self._refuse("stop")

    def kill(self) -> None:
        raise self._refuse("kill")

    def pause(self) -> None:
        raise self._refuse("pause")

    def resume(self) -> None:
        raise self._refuse("resume")

    def restart(self) -> None:
        raise self._refuse("restart")


class ProcessServer(ServerHandle):
    """A server process the tests own.

    Subclasses say how to run the server (:meth:`command`), what to write into its
    directory before each start (:meth:`prepare`) and how to tell it is ready
    (:meth:`probe`, a real protocol round trip). Ports are chosen on the first start and
    kept for restarts; the data directory is kept too.
    """

    #: How long a start may take before it counts as failed.
    start_timeout: ClassVar[float] = 30.0
    #: Names of the ports the server needs; the first is the client port.
    port_names: ClassVar[tuple[str, ...]] = ("client",)
    #: Log lines that mean the start failed even if the process lingers.
    fatal_log_markers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        ports: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        #: Ports fixed by a cluster that wrote them into its peers' configuration.
        self._ports_fixed = ports is not None
        self.ports: dict[str, int] = dict(ports) if ports else {}
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._starts = 0
        self._log_offset = 0

    # -- what subclasses provide --------------------------------------------------

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    def prepare(self) -> None:
        """Write configuration into :attr:`workdir`; runs before every start."""

    @abc.abstractmethod
    def probe(self) -> bool:
        """``True`` once the server answers a real request; may raise while starting."""

    def ping(self) -> None:
        if not self.probe():
            raise ServerError(f"{self.name} answered but is not serving")

    # -- addresses ----------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        name = self.port_names[0]
        if name not in self.ports:
            raise ServerError(f"{self.name} has no port yet: start it first")
        return self.ports[name]

    @property
    def data_dir(self) -> Path:
        """The server's data directory (kept across restarts)."""
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return f"--- {self.name}: no log yet at {self.log_path}"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ({self.name}):\n{tail}"

    # -- state --------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    @property
    def needs_heal(self) -> bool:
        return not self.is_running or self.is_paused

    def heal(self) -> None:
        if self.is_paused:
            self.resume()
        if not self.is_running:
            self.start()
        else:
            self.wait_ready()

    # -- lifecycle ----------------------------------------------------------------

    def start(self, *, wait: bool = True) -> None:
        """Start the process (no-op if running) and, with ``wait``, wait until ready.

        On the first start, "address already in use" is retried on fresh ports unless a
        cluster fixed the ports; on a restart the old ports are awaited instead.
        """
        if self.is_running:
            return
        attempts = 1 if self._ports_fixed or self._starts else 4
        for attempt in range(attempts):
            if not self.ports or (attempt and not self._ports_fixed):
                self.ports = dict(
                    zip(self.port_names, free_ports(len(self.port_names)), strict=True)
                )
            if self._starts:
                self._wait_ports_free()
            self._spawn()
            if not wait:
                return
            try:
                self.wait_ready()
                return
            except ServerStartError:
                if attempt + 1 < attempts and self._address_in_use():
                    continue
                raise

    def _spawn(self) -> None:
        self.prepare()
        self._starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start #{self._starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            env = {**os.environ, **self._env} if self._env else None
            main_thread = threading.current_thread() is threading.main_thread()
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                # The death signal follows the thread that forked: only ask for it from the
                # main thread, or a worker thread ending would take the server with it.
                preexec_fn=_die_with_parent if main_thread and _prctl else None,
            )
        self._paused = False
        _live.add(self)

    def _address_in_use(self) -> bool:
        return "address already in use" in self._current_log().lower()

    def _fatal_marker(self) -> str | None:
        if not self.fatal_log_markers:
            return None
        text = self._current_log()
        return next((marker for marker in self.fatal_log_markers if marker in text), None)

    def _current_log(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _wait_ports_free(self) -> None:
        for port in self.ports.values():
            wait_until(
                lambda port=port: not port_in_use(port),  # type: ignore[misc]
                timeout=30,
                what=f"port {port} to be released before restarting {self.name}",
            )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until :meth:`probe` succeeds; raise :class:`ServerStartError` with the log
        tail if the process exits or ``timeout`` (default :attr:`start_timeout`) passes."""
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.02
        last: BaseException | None = None
        while True:
            process = self._process
            if process is None:
                raise ServerStartError(f"{self.name} was never started")
            code = process.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting\n{self.log_tail()}"
                )
            if not self._paused:
                try:
                    if self.probe():
                        return
                except (OSError, ServerError, ValueError) as exc:
                    last = exc
                fatal = self._fatal_marker()
                if fatal is not None:
                    self.kill()
                    raise ServerStartError(
                        f"{self.name} failed to start ({fatal!r} in its log)\n{self.log_tail()}"
                    )
            if time.monotonic() >= deadline:
                self.kill()
                detail = f" (last probe error: {last!r})" if last else ""
                raise ServerStartError(
                    f"{self.name} was not ready after {limit:.0f}s{detail}\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. No-op if not running."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        if self._paused:
            self.resume()
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        process = self._require_running("pause")
        process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        process = self._require_running("resume")
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def _require_running(self, operation: str) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            raise ServerError(f"cannot {operation} {self.name}: it is not running")
        return process


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


N = TypeVar("N", bound=ProcessServer)


class ServerGroup(abc.ABC, Generic[N]):
    """Several server processes that together form one service (or a set of peers).

    :attr:`nodes` are the member handles, which offer every fault operation on their
    own; :meth:`heal` brings the group back to full health after a test broke it.
    """

    kind: ClassVar[str] = "group"

    def __init__(self, name: str, workdir: Path, size: int = 1) -> None:
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        #: How many members the group is built with.
        self.size = size
        self.nodes: list[N] = []

    @property
    def hostports(self) -> str:
        """``"host:port,host:port,..."`` of every member, as multi-host URLs list them."""
        return ",".join(node.hostport for node in self.nodes)

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A lockkit URL naming every member."""

    @property
    def processes(self) -> list[ProcessServer]:
        """Every process of the group (subclasses add their helpers, e.g. Sentinels)."""
        return list(self.nodes)

    @abc.abstractmethod
    def start(self) -> None:
        """Start every member and wait until the group serves."""

    @abc.abstractmethod
    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every member is up and the group agrees on its shape."""

    def _build(self) -> None:
        """Create the member handles on fresh ports (groups started by
        :meth:`_start_together`)."""
        raise NotImplementedError

    def _start_together(self) -> None:
        """Start every member at once (a quorum member serves only once the quorum has
        formed) and wait; on "address already in use" start over on fresh ports."""
        for attempt in range(3):
            self._build()
            for node in self.nodes:
                node.start(wait=False)
            try:
                for node in self.nodes:
                    node.wait_ready()
                self.wait_healthy()
                return
            except ServerStartError:
                clash = any(node._address_in_use() for node in self.nodes)
                for node in self.nodes:
                    node.kill()
                if not clash or attempt == 2:
                    raise

    @property
    def needs_heal(self) -> bool:
        return any(process.needs_heal for process in self.processes)

    def heal(self, timeout: float = 60.0) -> None:
        """Resume paused members, restart stopped ones, wait until healthy."""
        for process in self.processes:
            if process.is_paused:
                process.resume()
        for process in self.processes:
            if not process.is_running:
                process.start(wait=False)
        for process in self.processes:
            process.wait_ready()
        self.wait_healthy(timeout)

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after a while)."""
        for process in self.processes:
            process.stop()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(process.log_tail(lines) for process in self.processes)

    async def aheal(self, within: float = 60.0) -> None:
        """:meth:`heal` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(lambda: self.heal(within))

    async def await_healthy(self, within: float = 60.0) -> None:
        """:meth:`wait_healthy` in a worker thread, so the event loop keeps running."""
        await anyio.to_thread.run_sync(lambda: self.wait_healthy(within))

    def __repr__(self) -> str:
        members = ", ".join(node.hostport for node in self.nodes)
        return f"<{type(self).__name__} {self.name} [{members}]>"
