"""One transaction followed end to end through a real worker (#24): produced with a
``traceparent``, scored, alerted, labelled by an analyst in the console; one trace."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from confluent_kafka import Producer

from streams.devtools.otlp_receiver import OtlpReceiver
from tests.streams.test_tracing import STAGE_SPANS
from tests.worker_helpers import WorkerEnv, events_for, tx_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BANK_TRACE = "0af7651916cd43dd8448eb211c80319c"
BANK_SPAN = "b7ad6b7169203331"
TOKEN = "trace-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Analyst": "robot"}


def _wait(pred, timeout_s: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    return pred()


def test_bank_to_worker_to_alert_to_label_is_one_trace(wenv: WorkerEnv, stack) -> None:
    events = events_for(n_users=6, days=3, seed=71)
    _, traced_value = events[len(events) // 2]
    traced_tx = json.loads(traced_value)["transaction_id"]
    with OtlpReceiver() as receiver:
        worker = wenv.start(
            extra_env={
                "RISKSTREAM_TRACING__ENABLED": "true",
                "RISKSTREAM_TRACING__SAMPLE_RATIO": "0",
                "RISKSTREAM_TRACING__OTLP_ENDPOINT": receiver.endpoint,
                "RISKSTREAM_TRACING__EXPORT_INTERVAL_MS": "100",
                # every transaction alerts, so the traced one can be labelled
                "RISKSTREAM_THRESHOLDS__LOWER": "0",
                "RISKSTREAM_THRESHOLDS__UPPER": "0",
                "RISKSTREAM_CONSOLE__ENABLED": "true",
                "RISKSTREAM_HTTP__TOKEN": TOKEN,
                "RISKSTREAM_LOG_LEVEL": "INFO",  # the label's log line
            }
        )
        try:
            producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
            header = [("traceparent", f"00-{BANK_TRACE}-{BANK_SPAN}-01".encode())]
            for key, value in events:
                extra = header if value is traced_value else None
                producer.produce(wenv.topics["transactions"], key=key, value=value, headers=extra)
            assert producer.flush(30) == 0
            alerts = wenv.read("alerts", expected=len(events), key_of=tx_id_of, timeout_s=90)
            alert = next(m for m in alerts if tx_id_of(m) == traced_tx)
            assert BANK_TRACE.encode() in dict(alert.headers() or [])["traceparent"]
            alert_id = json.loads(alert.value())["alert_id"]

            def in_console() -> bool:
                status, page = worker.get_auth("/console/api/alerts?limit=500", AUTH)
                return status == 200 and any(a["alert_id"] == alert_id for a in page["alerts"])

            assert _wait(in_console), "the console never showed the alert"
            body = json.dumps({"alert_id": alert_id, "label": "fraud"}).encode()
            assert worker.post("/console/api/decision", body, AUTH)[0] == 200

            def trace() -> set[str]:
                names = {s.name for s in receiver.spans() if s.trace_id == BANK_TRACE}
                return names if "riskstream.feedback" in names else set()

            names = _wait(trace)
            metrics = worker.get_text("/metrics")
            ask = urllib.request.Request(
                worker.url("/metrics"), headers={"Accept": "application/openmetrics-text"}
            )
            with urllib.request.urlopen(ask, timeout=5) as r:
                openmetrics = r.read().decode()
                content_type = r.headers["Content-Type"]
        finally:
            code = worker.stop()
        spans = [s for s in receiver.spans() if s.trace_id == BANK_TRACE]
        receiver_spans = receiver.spans()
    assert code == 0
    assert {*STAGE_SPANS, "riskstream.feedback"} <= names, names
    decision = next(s for s in spans if s.name == "riskstream.decision")
    assert decision.parent_span_id == BANK_SPAN  # a child of the bank's span
    assert decision.attributes["riskstream.transaction_id"] == traced_tx
    feedback = next(s for s in spans if s.name == "riskstream.feedback")
    assert feedback.parent_span_id == decision.span_id  # the label joins under the decision
    assert feedback.attributes["riskstream.label"] == "fraud"
    # the others alerted, so they were traced too (alerts always), each in its own trace
    assert len({s.trace_id for s in receiver.spans()}) > 1
    assert "riskstream_ingest_to_publish_ms" in metrics and "# {" not in metrics
    # exemplars (a traced observation's trace id) come only in OpenMetrics, when asked
    assert content_type.startswith("application/openmetrics-text")
    exemplar_lines = [
        line
        for line in openmetrics.splitlines()
        if line.startswith("riskstream_ingest_to_publish_ms_bucket") and "# {trace_id=" in line
    ]
    assert exemplar_lines, "no exemplar on the produce-to-decision histogram"
    traced_ids = {s.trace_id for s in receiver_spans}
    assert all(line.split('trace_id="')[1][:32] in traced_ids for line in exemplar_lines)
    log = "".join(p.read_text(errors="replace") for p in wenv.tmp.glob("worker-*.log"))
    assert f"trace_id={BANK_TRACE}" in log  # the label's log line names the trace
