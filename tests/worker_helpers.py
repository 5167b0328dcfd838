"""Start and stop real worker processes against the session's embedded stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.devtools.embedded import EmbeddedStack, die_with_parent, free_port
from streams.devtools.simulator import SimulatorConfig, simulate


@dataclass
class WorkerEnv:
    """Unique topics, Redis prefix and group for one test; start workers on them."""

    stack: EmbeddedStack
    tmp: Path
    name: str

    @property
    def topics(self) -> dict[str, str]:
        return {
            k: f"{self.name}-{k}" for k in ("transactions", "scores", "alerts", "dlq", "feedback")
        }

    def env(self, port: int) -> dict[str, str]:
        t = self.topics
        return {
            **os.environ,
            "RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS": self.stack.bootstrap_servers,
            "RISKSTREAM_KAFKA__SESSION_TIMEOUT_MS": "2000",
            "RISKSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "300",
            "RISKSTREAM_KAFKA__FETCH_MAX_WAIT_MS": "10",
            "RISKSTREAM_REDIS__URL": self.stack.redis_url,
            "RISKSTREAM_REDIS__RETRY_ATTEMPTS": "8",
            "RISKSTREAM_SEQUENCE__KEY_PREFIX": f"{self.name}:",
            "RISKSTREAM_TOPICS__TRANSACTIONS": t["transactions"],
            "RISKSTREAM_TOPICS__SCORES": t["scores"],
            "RISKSTREAM_TOPICS__ALERTS": t["alerts"],
            "RISKSTREAM_TOPICS__DLQ": t["dlq"],
            "RISKSTREAM_TOPICS__FEEDBACK": t["feedback"],
            "RISKSTREAM_TOPICS__PARTITIONS": "2",
            "RISKSTREAM_APP_ID": self.name,
            "RISKSTREAM_HTTP__PORT": str(port),
            "RISKSTREAM_DATA_DIR": str(self.tmp / "data"),
            "RISKSTREAM_LOG_LEVEL": "WARNING",
        }

    def start(self, wait_ready: bool = True, extra_env: dict[str, str] | None = None) -> Worker:
        port = free_port()
        log = (self.tmp / f"worker-{uuid.uuid4().hex[:6]}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**self.env(port), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed test run leaves no worker behind
        )
        worker = Worker(proc, port, log)
        if wait_ready:
            worker.wait_ready()
        return worker

    def read(self, name: str, **kwargs: Any) -> list[Any]:
        """Messages of one of this test's topics (``scores``, ``alerts``, ``dlq``, ...)."""
        from tests.kafka_helpers import read_topic

        return read_topic(self.stack.bootstrap_servers, self.topics[name], **kwargs)

    def produce(self, payloads: list[tuple[str, bytes]], topic: str | None = None) -> None:
        producer = Producer({"bootstrap.servers": self.stack.bootstrap_servers, "linger.ms": 5})
        for key, value in payloads:
            producer.produce(topic or self.topics["transactions"], key=key, value=value)
            producer.poll(0)
        assert producer.flush(30) == 0


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Any

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get_auth(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(self.url(path), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            return str(r.read().decode())

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            self.url(path),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("worker not ready in time")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)


def events_for(n_users: int = 40, days: int = 10, seed: int = 4) -> list[tuple[str, bytes]]:
    table = simulate(SimulatorConfig(users=n_users, days=days, seed=seed))
    out = []
    for row in table.to_pylist():
        row.pop("is_fraud"), row.pop("scenario")
        out.append(
            (row["user_id"], json.dumps({k: v for k, v in row.items() if v is not None}).encode())
        )
    return out


def steady_stream(seed: int) -> list[tuple[str, bytes]]:
    """≥ 20,000 simulated events (700 card holders, 11 days; labels kept aside): the size
    the fault, cluster and soak tests run at, enough to keep a worker busy for seconds."""
    events = events_for(n_users=700, days=11, seed=seed)
    assert len(events) >= 20_000
    return events


def tx_id_of(m: Any) -> str:
    return json.loads(m.value())["transaction_id"]
