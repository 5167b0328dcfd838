"""Tracing (#24): which transactions are traced, what their traces hold, and that the
context travels bank → worker → scores/alerts → analyst label → worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scoring.decision import Decision
from streams.devtools.otlp_receiver import OtlpReceiver
from streams.file_producer import new_traceparent
from streams.settings import TracingSettings
from streams.tracing import Tracing
from tests.service_helpers import raw, running_service, service_settings, transactions

# what a traced transaction's trace holds from the worker (docs/deploy.md, "Tracing")
STAGE_SPANS = {
    f"riskstream.{name}"
    for name in (
        "decision",
        "batch",
        "decode",
        "store",
        "featurize",
        "encoder",
        "head",
        "thresholds",
        "publish",
        "ack",
    )
}
BANK_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BANK_SPAN = "00f067aa0ba902b7"


def _header(flags: str = "01") -> list[tuple[str, bytes | None]]:
    return [("traceparent", f"00-{BANK_TRACE}-{BANK_SPAN}-{flags}".encode())]


def _decision(i: int, score: float, threshold: float = 0.5) -> Decision:
    tx = transactions(users=2, days=2)[i]
    return Decision(tx, score, threshold, "m1", 3, 1.0)


def test_which_transactions_are_traced() -> None:
    none = Tracing(TracingSettings(enabled=True, sample_ratio=0.0), InMemorySpanExporter())
    every = Tracing(TracingSettings(enabled=True, sample_ratio=1.0), InMemorySpanExporter())
    quiet = Tracing(
        TracingSettings(enabled=True, sample_ratio=0.0, always_sample_alerts=False),
        InMemorySpanExporter(),
    )
    sampled, unsampled = none.parent(_header("01")), none.parent(_header("00"))
    assert sampled is not None and unsampled is not None
    assert none.parent([("other", b"x")]) is None and none.parent(None) is None
    assert none.parent([("traceparent", b"not a traceparent")]) is None
    assert none.wanted(None, is_alert=True)  # alerts always
    assert not none.wanted(None, is_alert=False)
    assert none.wanted(sampled, is_alert=False)  # the bank's decision is kept
    assert not none.wanted(unsampled, is_alert=False)
    assert every.wanted(None, is_alert=False)
    assert not quiet.wanted(None, is_alert=True)
    quarter = Tracing(TracingSettings(enabled=True, sample_ratio=0.25), InMemorySpanExporter())
    share = sum(quarter.wanted(None, False) for _ in range(2000))
    assert 400 < share < 600


def test_a_traced_batch_is_recorded_once_and_linked() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingSettings(enabled=True), exporter)
    t0 = time.time_ns()
    first = tracing.start_decision(_decision(0, 0.9), tracing.parent(_header()), t0)
    second = tracing.start_decision(_decision(1, 0.1), None, t0)
    assert first.trace_id == BANK_TRACE and second.trace_id != BANK_TRACE
    assert first.headers[0][0] == "traceparent" and BANK_TRACE.encode() in first.headers[0][1]
    stages = {"decode": (t0, t0 + 10), "store": (t0 + 10, t0 + 20)}
    engine = {"store": (t0 + 5, t0 + 25), "head": (t0 + 30, t0 + 40)}
    tracing.finish_batch([first, second], [stages, engine], size=7, end_ns=t0 + 100)
    tracing.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "riskstream.decision"}
    decisions = [s for s in exporter.get_finished_spans() if s.name == "riskstream.decision"]
    assert len(decisions) == 2 and len(spans) == 4  # batch + decode, store, head: once
    bank = next(d for d in decisions if format(d.context.trace_id, "032x") == BANK_TRACE)
    assert bank.parent is not None and format(bank.parent.span_id, "016x") == BANK_SPAN
    batch = spans["riskstream.batch"]
    assert batch.parent is not None and batch.parent.span_id == bank.context.span_id
    assert batch.attributes["riskstream.batch_size"] == 7
    for name in ("riskstream.decode", "riskstream.store", "riskstream.head"):
        assert spans[name].parent.span_id == batch.context.span_id  # type: ignore[union-attr]
    assert spans["riskstream.store"].start_time == t0 + 5  # widest interval of the stage
    assert spans["riskstream.store"].end_time == t0 + 25
    other = next(d for d in decisions if d is not bank)
    assert [link.context.span_id for link in other.links] == [batch.context.span_id]


@pytest.mark.integration
async def test_the_pipeline_continues_the_banks_trace_into_scores_and_alerts(
    stack, tmp_path: Path
) -> None:
    from tests.kafka_helpers import read_topic

    txs = transactions(users=6, days=4)[:40]
    with OtlpReceiver() as receiver:
        settings = service_settings(
            stack,
            tmp_path,
            **{
                "tracing.enabled": True,
                "tracing.sample_ratio": 0.0,
                "tracing.always_sample_alerts": False,
                "tracing.otlp_endpoint": receiver.endpoint,
                "tracing.export_interval_ms": 50,
            },
        )
        messages = raw(txs, settings.topics.transactions)
        traced_tx = txs[5].transaction_id
        messages[5] = type(messages[5])(**{**messages[5].__dict__, "headers": _header()})
        untraced_tx = txs[6].transaction_id
        unsampled = [("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-00".encode())]
        messages[6] = type(messages[6])(**{**messages[6].__dict__, "headers": unsampled})
        async with running_service(settings) as svc:
            assert svc.runtime is not None
            await svc.runtime.pipeline.process(messages)
        # the service's stop flushed the exporter
        spans = receiver.spans()
    scores = read_topic(
        stack.bootstrap_servers,
        settings.topics.scores,
        key_of=lambda m: json.loads(m.value())["transaction_id"],
        until_keys={t.transaction_id for t in txs},
    )
    by_tx = {json.loads(m.value())["transaction_id"]: dict(m.headers() or []) for m in scores}
    assert BANK_TRACE.encode() in by_tx[traced_tx]["traceparent"]
    assert by_tx[untraced_tx]["traceparent"] == unsampled[0][1]  # forwarded as it came
    assert "traceparent" not in by_tx[txs[0].transaction_id]
    ours = [s for s in spans if s.trace_id == BANK_TRACE]
    names = {s.name for s in ours}
    assert names >= STAGE_SPANS
    assert len({s.trace_id for s in spans}) == 1, "only the bank-sampled transaction is traced"
    decision = next(s for s in ours if s.name == "riskstream.decision")
    assert decision.parent_span_id == BANK_SPAN
    assert decision.attributes["riskstream.transaction_id"] == traced_tx
    assert all(s.service == "riskstream-worker" for s in ours)


def test_new_traceparent_is_w3c() -> None:
    ((key, value),) = new_traceparent()
    version, trace_id, span_id, flags = value.decode().split("-")
    assert key == "traceparent" and version == "00" and flags == "01"
    assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) > 0


def test_log_lines_name_the_trace_of_a_message() -> None:
    from streams.pipeline import _trace_field

    assert _trace_field(_header()) == f" trace_id={BANK_TRACE}"
    assert _trace_field(None) == "" and _trace_field([("traceparent", b"junk")]) == ""
