"""The worker's failure policy and start/stop that never block the event loop (#17 items 5, 6).

Real worker processes on the embedded stack: infrastructure that fails past its retries
stops the worker through its normal shutdown (the cache snapshot is written, the failed
batch is not acked) and exits 70; a restart loses nothing. /healthz answers while
start-up waits on an absent broker.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from scoring.artifact import load_artifact
from streams.devtools.embedded import free_port
from tests.worker_helpers import WorkerEnv, events_for, steady_stream, tx_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_redis_down_past_the_retries_stops_cleanly_with_70_and_a_restart_loses_nothing(
    wenv: WorkerEnv, stack
) -> None:
    events = events_for(n_users=60, days=10, seed=41)
    ids = {json.loads(v)["transaction_id"] for _, v in events}
    quick = {"RISKSTREAM_REDIS__RETRY_ATTEMPTS": "1", "RISKSTREAM_REDIS__RETRY_BACKOFF_S": "0.05"}
    worker = wenv.start(extra_env=quick)
    half = len(events) // 2
    try:
        wenv.produce(events[:half])
        wenv.read("scores", expected=half, key_of=tx_id_of, timeout_s=90)
        stack.stop_redis()
        wenv.produce(events[half:])
        worker.proc.wait(60)
    finally:
        stack.start_redis()
        code = worker.stop()
    text = "".join(p.read_text(errors="replace") for p in wenv.tmp.glob("worker-*.log"))
    assert code == 70, f"exit code {code}"
    version = load_artifact().version  # each model version snapshots into its own folder
    snapshot = wenv.tmp / "data" / "cache" / version / "cache.json"
    assert snapshot.exists(), "no snapshot: not a clean stop"
    assert "stopping for a restart" in text
    again = wenv.start()
    try:
        scores = wenv.read("scores", expected=len(ids), key_of=tx_id_of, timeout_s=120)
        assert {tx_id_of(m) for m in scores} >= ids, "events lost across the stop"
    finally:
        assert again.stop() == 0


def test_healthz_answers_while_start_up_waits_on_an_absent_broker(wenv: WorkerEnv) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    worker = wenv.start(wait_ready=False, extra_env={"RISKSTREAM_KAFKA__BOOTSTRAP_SERVERS": dead})
    try:
        deadline, health, ready = time.monotonic() + 60, None, None
        while time.monotonic() < deadline and health != 200:
            try:
                health = worker.get("/healthz")[0]
                ready = worker.get("/readyz")[0]
            except (OSError, ValueError):
                time.sleep(0.2)
        assert health == 200, "/healthz did not answer while start-up waited on the broker"
        assert ready == 503
        assert worker.alive()
    finally:
        worker.stop()


def test_healthz_answers_while_shutdown_waits_on_the_broker(tmp_path) -> None:
    """SIGTERM while the broker is frozen: the stop waits on the producer's flush and the
    batch in flight; /healthz keeps answering meanwhile (the flush is off the loop)."""
    import os
    import signal
    import uuid

    from streams.devtools.embedded import running_stack

    with running_stack() as own:
        wenv = WorkerEnv(own, tmp_path, f"h{uuid.uuid4().hex[:8]}")
        own.create_topics(list(wenv.topics.values()), partitions=2)
        worker = wenv.start()
        # Enough input that the worker is still mid-stream when the broker freezes: with a
        # few hundred events it could finish them all first (CI did), and an idle worker
        # has no batch in flight and nothing to flush, so its stop rightly does not wait.
        events = steady_stream(43)
        wenv.produce(events)
        wenv.read("scores", expected=200, key_of=tx_id_of, timeout_s=60)
        os.kill(own.kafka.pid, signal.SIGSTOP)
        try:
            worker.proc.send_signal(signal.SIGTERM)
            answered = 0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and worker.alive():
                with contextlib.suppress(OSError, ValueError):
                    answered += worker.get("/healthz")[0] == 200
                time.sleep(0.2)
            still_stopping = worker.alive()
        finally:
            os.kill(own.kafka.pid, signal.SIGCONT)
        code = worker.stop()
    assert still_stopping, "the stop did not wait for the frozen broker"
    assert answered >= 5, f"/healthz answered {answered} times while the worker was stopping"
    assert code in (0, 70)
