"""Run a worker process against an embedded stack (demo, load test, benchmarks).

The worker is a real ``riskstream worker`` child process, configured only through
``RISKSTREAM_*`` environment variables, exactly as an operator would run it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams.devtools.embedded import EmbeddedStack, die_with_parent, free_port


def embedded_env(
    stack: EmbeddedStack, data_dir: Path, port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Settings for a worker on the embedded stack (small timeouts: DESIGN §7)."""
    return {
        **os.environ,
        "RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "RISKSTREAM_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "RISKSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "300",
        "RISKSTREAM_KAFKA__FETCH_MAX_WAIT_MS": "10",
        "RISKSTREAM_REDIS__URL": stack.redis_url,
        "RISKSTREAM_HTTP__PORT": str(port),
        "RISKSTREAM_DATA_DIR": str(data_dir),
        "RISKSTREAM_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }


@dataclass
class LocalWorker:
    """A started worker process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.proc.returncode} during start-up "
                    f"(log: {self.log_path})"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the worker did not become ready in time (log: {self.log_path})")

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (graceful: finish the batch, commit, snapshot), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_worker(
    stack: EmbeddedStack, data_dir: Path, extra_env: dict[str, str] | None = None
) -> LocalWorker:
    """Start ``riskstream worker`` on the stack; call ``wait_ready`` before sending."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=embedded_env(stack, data_dir, port, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # never outlives the demo or load test
        )
    return LocalWorker(proc, port, log_path)
