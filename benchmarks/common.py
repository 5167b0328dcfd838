"""Shared helpers for benchmark scripts: machine description and result printing."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis
from confluent_kafka import Consumer

from streams.kafka.clients import reader


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def report(name: str, **figures: Any) -> None:
    """Print one JSON line per measurement (copied into docs/BENCHMARKS.md)."""
    print(json.dumps({"bench": name, **figures, "machine": machine()}), flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux ``/proc``; NaN elsewhere).

    Benchmarks that share two cores between the broker, Redis and the worker report each
    one's CPU per event, so a throughput figure says which process it was bound by.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(port: int) -> float:
    """User + system CPU a local Redis/valkey server has used so far, from its own
    ``INFO cpu`` (microseconds). ``/proc`` counts in 10 ms ticks, too coarse for a server
    that does a short phase's work in a few such ticks (docs/BENCHMARKS.md)."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as client:
        cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


class CpuMeter:
    """CPU milliseconds per event, per named process, over one measured phase.

    ``redis_ports``: Redis servers measured by their own ``INFO cpu`` (``redis_cpu_seconds``)
    rather than ``/proc`` ticks, by name like ``pids``.
    """

    def __init__(self, pids: dict[str, int], redis_ports: dict[str, int] | None = None) -> None:
        self._read = {name: partial(cpu_seconds, pid) for name, pid in pids.items()}
        for name, port in (redis_ports or {}).items():
            self._read[name] = partial(redis_cpu_seconds, port)
        self._start = {name: read() for name, read in self._read.items()}
        self._self = os.times()

    def per_event_ms(self, events: int) -> dict[str, float]:
        out = {
            name: round((read() - self._start[name]) * 1000 / max(events, 1), 4)
            for name, read in self._read.items()
        }
        now = os.times()
        used = (now.user - self._self.user) + (now.system - self._self.system)
        out["benchmark_driver"] = round(used * 1000 / max(events, 1), 3)
        return out


def assigned_reader(bootstrap: str, topic: str, from_end: bool = False) -> Consumer:
    """A group-less reader of every partition of ``topic``, from the start (or the end).

    ``assign()`` rather than a group: Tansu under-reports end offsets, and a slow group
    re-reads (DESIGN §7). Tansu also holds every fetch for the full ``fetch.wait.max.ms``,
    data or not, so a reader adds 0-10 ms to what it times (counted in, not subtracted);
    at 1 ms the broker's CPU per event rose 10-25x and the trivial agent's rate fell 3-15x.
    """
    return reader({"bootstrap.servers": bootstrap}, [topic], "end" if from_end else "beginning")


def replicate(primary: int, replica: int, timeout_s: float = 30) -> None:
    """Make ``replica`` follow ``primary``; return once the link is up and synced."""
    sync = redis.Redis(port=replica)
    sync.execute_command("REPLICAOF", "127.0.0.1", str(primary))
    deadline = time.monotonic() + timeout_s
    while sync.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not sync in time")
        time.sleep(0.05)
    sync.close()
