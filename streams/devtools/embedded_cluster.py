"""An embedded Redis Cluster: valkey-server processes in cluster mode on loopback.

N masters with one replica each, formed the way an operator would by hand:
``CLUSTER ADDSLOTSRANGE`` gives each master an equal share of the 16,384 slots,
``CLUSTER MEET`` joins every node to the first, and ``CLUSTER REPLICATE`` makes each
replica follow its master. Ready when every node's ``CLUSTER INFO`` says
``cluster_state:ok`` with all slots assigned and every replica reports its link up:
polled real checks, no fixed sleeps. ``cluster-node-timeout`` is short by default (1 s)
so a killed master's replica is promoted within seconds (fault tests). Benchmarks pass
valkey's own default (15 s), as a production cluster runs: nodes ping each other every
half timeout, so the short one costs every node idle CPU that is not per-event work.

Used by tests and ``riskstream stack --redis-cluster N``; processes stop with the
cluster (``stop``) or with the parent (``die_with_parent``).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from streams.devtools.embedded import ChildServer, _start_with_retry, valkey_binary
from streams.errors import EmbeddedStackError

SLOTS = 16_384
NODE_TIMEOUT_MS = 1000
#: valkey's default ``cluster-node-timeout``: what a production cluster runs with
PRODUCTION_NODE_TIMEOUT_MS = 15_000
_FORM_TIMEOUT_S = 60.0


def _ports_free(port: int) -> bool:
    """The client port and its cluster-bus port (+10,000) are both free now."""
    for p in (port, port + 10_000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _ephemeral_low(default: int = 32_768) -> int:
    """The first port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _pick_port() -> int:
    """A free client port whose cluster-bus port is free too, both below the kernel's
    ephemeral range. A killed node is restarted on its own port, and meanwhile clients
    keep reconnecting to it: a connection to a port of the ephemeral range that nothing
    listens on can take that very port as its source and connect to itself (TCP
    simultaneous open), and the restarted node then fails to bind ("Address already in
    use"; seen in CI)."""
    top = _ephemeral_low() - 10_000 - 1  # the bus port (+10,000) stays below it as well
    low, high = (10_000, top) if top > 12_000 else (20_000, 55_000)
    for _ in range(200):
        port = random.randint(low, high)
        if _ports_free(port):
            return port
    raise EmbeddedStackError("no free port pair (client + cluster bus) on 127.0.0.1")


def _client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=2, decode_responses=True
    )


def _cmd(port: int, *args: object, password: str | None = None) -> Any:
    """One command on one node, on a connection closed afterwards."""
    with _client(port, password) as c:
        return c.execute_command(*args)


def _node_ready(port: int) -> bool:
    """The node answers RESP: ``+PONG``, or ``-NOAUTH`` when it requires a password."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


@dataclass
class EmbeddedRedisCluster:
    """A started cluster: ``masters`` and their ``replicas`` (same index)."""

    masters: list[ChildServer]
    replicas: list[ChildServer]
    workdir: Path
    password: str | None = field(default=None, repr=False)
    node_timeout_ms: int = NODE_TIMEOUT_MS
    _owns_workdir: bool = field(default=True, repr=False)

    @property
    def nodes(self) -> list[ChildServer]:
        return [*self.masters, *self.replicas]

    @property
    def url(self) -> str:
        """A seed node's URL: a cluster client discovers the rest."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.masters[0].port}/0"

    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def master_of_slot(self, slot: int) -> ChildServer:
        """The node serving ``slot`` now (after a failover: the promoted replica)."""
        for node in self.nodes:
            if not node.alive():
                continue
            # [first, last, [host, port, id], replicas...] per range
            for lo, hi, primary, *_ in _cmd(node.port, "CLUSTER SLOTS", password=self.password):
                if int(lo) <= slot <= int(hi):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedStackError(f"no live node serves slot {slot}")

    def kill(self, node: ChildServer) -> None:
        """SIGKILL one node (fault tests): its replica takes over after the node timeout."""
        node.process.kill()
        node.process.wait(10)

    def restart(self, node: ChildServer) -> ChildServer:
        """Start a killed node again on its port with its cluster config (its data is
        gone: memory only); it rejoins with the slots it still owns."""
        fresh = _spawn_node(
            node.port, self.workdir / f"node-{node.port}", self.password, self.node_timeout_ms
        )
        for group in (self.masters, self.replicas):
            for i, n in enumerate(group):
                if n is node:
                    group[i] = fresh
        return fresh

    def wait_healthy(self, timeout_s: float = _FORM_TIMEOUT_S) -> None:
        """Until every live node sees ``cluster_state:ok`` with all slots served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_state_ok(n.port, self.password) for n in self.nodes if n.alive()):
                return
            time.sleep(0.05)
        raise EmbeddedStackError("the embedded Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _state_ok(port: int, password: str | None = None) -> bool:
    try:
        info = _cmd(port, "CLUSTER INFO", password=password)
    except (redis.RedisError, OSError):
        return False
    # redis-py parses the reply into a dict of strings
    return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == SLOTS


def _node_argv(
    port: int, folder: Path, password: str | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS
) -> list[str]:
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    return [
        str(valkey_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(folder / "nodes.conf"),
        "--cluster-node-timeout",
        str(node_timeout_ms),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        *auth,
    ]


def _spawn_node(
    port: int, folder: Path, password: str | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS
) -> ChildServer:
    return _start_with_retry(
        f"valkey-cluster-{port}",
        lambda p: _node_argv(p, folder, password, node_timeout_ms),
        _node_ready,
        folder,
        port,
    )


def _start_node(
    workdir: Path, password: str | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS
) -> ChildServer:
    for _ in range(5):
        port = _pick_port()
        folder = workdir / f"node-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(EmbeddedStackError):
            return _spawn_node(port, folder, password, node_timeout_ms)
    raise EmbeddedStackError("a cluster node did not start")


def start_cluster(
    masters: int = 3, password: str | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS
) -> EmbeddedRedisCluster:
    """Start ``masters`` masters and one replica each; form the cluster; wait until ok.

    ``password``: every node requires it (``requirepass``) and replicas use it to reach
    their masters (``masterauth``), as a production cluster with AUTH does.
    ``node_timeout_ms``: every node's ``cluster-node-timeout`` (see the module doc)."""
    if not 1 <= masters <= 16:
        raise EmbeddedStackError(f"--redis-cluster {masters}: between 1 and 16 masters")
    workdir = Path(tempfile.mkdtemp(prefix="riskstream-cluster-"))
    started: list[ChildServer] = []
    try:
        for _ in range(2 * masters):
            started.append(_start_node(workdir, password, node_timeout_ms))
        cluster = EmbeddedRedisCluster(
            started[:masters], started[masters:], workdir, password, node_timeout_ms
        )
        _form(cluster)
        return cluster
    except BaseException:
        for node in started:
            node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _form(cluster: EmbeddedRedisCluster) -> None:
    n, pw = len(cluster.masters), cluster.password
    for i, node in enumerate(cluster.masters):
        lo, hi = i * SLOTS // n, (i + 1) * SLOTS // n - 1
        _cmd(node.port, "CLUSTER ADDSLOTSRANGE", lo, hi, password=pw)
    seed = cluster.masters[0].port
    for node in cluster.nodes[1:]:
        _cmd(node.port, "CLUSTER MEET", "127.0.0.1", seed, password=pw)
    deadline = time.monotonic() + _FORM_TIMEOUT_S
    ids = {node.port: _cmd(node.port, "CLUSTER MYID", password=pw) for node in cluster.nodes}
    while True:  # every node knows every other before replicas can name their masters
        known = [
            len(_cmd(node.port, "CLUSTER NODES", password=pw))
            for node in cluster.nodes  # parsed: one per node
        ]
        if all(k == len(cluster.nodes) for k in known):
            break
        if time.monotonic() > deadline:
            raise EmbeddedStackError("cluster nodes did not meet")
        time.sleep(0.05)
    for master, replica in zip(cluster.masters, cluster.replicas, strict=True):
        _cmd(replica.port, "CLUSTER REPLICATE", ids[master.port], password=pw)
    cluster.wait_healthy(max(1.0, deadline - time.monotonic()))
    while True:  # replicas have synced: a failover has something to promote
        if all(_replica_up(r.port, pw) for r in cluster.replicas):
            return
        if time.monotonic() > deadline:
            raise EmbeddedStackError("cluster replicas did not sync with their masters")
        time.sleep(0.05)


def _replica_up(port: int, password: str | None = None) -> bool:
    with _client(port, password) as c:
        info = c.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"
