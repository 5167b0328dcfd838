"""OpenTelemetry traces of transactions, from the bank's producer to the analyst's label.

Off by default; built only when ``tracing.enabled`` (the OpenTelemetry SDK is imported
here and nowhere else, from the ``tracing`` extra).

What a traced transaction's trace holds, under the bank's ``traceparent`` when it sent
one (a new trace otherwise):

* ``riskstream.decision``: the transaction's own span (score, threshold, alert, model).
  Its context goes into the headers of the ``scores`` and ``alerts`` records, and from
  the alert into the console's ``feedback`` message, so the label's span joins the trace;
* ``riskstream.batch``: the micro-batch the transaction was scored in, with one child
  span per stage (decode, store, featurize, encoder, head, thresholds, explain, publish,
  ack). A batch is recorded once, under one traced transaction (one whose trace the bank
  started, if any), and *linked* from the others: stage spans are never per event.

The decision to trace is taken after scoring, so alerts can always be traced (a
tail-style decision without buffering spans): stage times are taken for every batch
(a few clock reads) and turned into spans, with their measured start and end times,
only for batches that hold a traced transaction. A transaction whose parent is sampled
is traced; one whose parent is not sampled is not (unless it alerts); one without a
parent is traced with probability ``sample_ratio``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scoring.decision import Decision
from streams.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes | None]]
Stages = Mapping[str, tuple[int, int]]  # name -> (start, end) in epoch nanoseconds
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(headers: Headers | None) -> dict[str, str]:
    """The W3C trace-context headers among a message's Kafka headers."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        if key in TRACE_HEADERS and value is not None:
            out[key] = value.decode("ascii", "replace")
    return out


def forwarded(headers: Headers | None) -> list[tuple[str, bytes]] | None:
    """The incoming trace-context headers, as they came (for an untraced transaction)."""
    kept = [(k, v) for k, v in headers or () if k in TRACE_HEADERS and v is not None]
    return kept or None


@dataclass(frozen=True)
class TracedDecision:
    """A transaction being traced: its started span and the headers that carry it on."""

    decision: Decision
    span: Span
    trace_id: str  # 32 hex digits
    headers: list[tuple[str, bytes]]
    continued: bool  # the bank sent its trace context (the batch is recorded there first)


class Tracing:
    """The worker's tracer; one per process."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:  # pragma: no cover - depends on the installed extras
            from streams.errors import MissingExtraError

            raise MissingExtraError(
                "tracing.enabled needs the tracing extra: pip install 'riskstream[tracing]'"
            ) from None
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, timeout=5)
        self.settings = settings
        # every span we start is one we decided to keep: the sampler must not drop it
        self._provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=Resource.create({"service.name": settings.service_name}),
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=settings.export_interval_ms)
        )
        self._tracer = self._provider.get_tracer("riskstream")
        self._propagator = TraceContextTextMapPropagator()
        self._random = random.Random()

    def parent(self, headers: Headers | None) -> Context | None:
        """The bank's trace context from a message's headers, or None."""
        carrier = trace_headers(headers)
        if "traceparent" not in carrier:
            return None
        from opentelemetry import trace

        ctx = self._propagator.extract(carrier)
        return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None

    def wanted(self, parent: Context | None, is_alert: bool) -> bool:
        """Whether to trace a scored transaction (see the module docstring)."""
        if is_alert and self.settings.always_sample_alerts:
            return True
        if parent is not None:
            from opentelemetry import trace

            return bool(trace.get_current_span(parent).get_span_context().trace_flags.sampled)
        return self._random.random() < self.settings.sample_ratio

    def start_decision(
        self, decision: Decision, parent: Context | None, start_ns: int
    ) -> TracedDecision:
        """Start the transaction's span (ended by ``finish_batch``) and its headers."""
        from opentelemetry import trace

        span = self._tracer.start_span(
            "riskstream.decision",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            start_time=start_ns,
            attributes={
                "riskstream.transaction_id": decision.tx.transaction_id,
                "riskstream.score": decision.score,
                "riskstream.threshold": decision.threshold,
                "riskstream.alert": decision.is_alert,
                "riskstream.model_version": decision.model_version,
                "riskstream.sequence_length": decision.sequence_length,
            },
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, trace.set_span_in_context(span))
        headers = [(k, v.encode("ascii")) for k, v in carrier.items()]
        trace_id = format(span.get_span_context().trace_id, "032x")
        return TracedDecision(decision, span, trace_id, headers, parent is not None)

    def finish_batch(
        self, traced: Sequence[TracedDecision], stages: Iterable[Stages], size: int, end_ns: int
    ) -> None:
        """Record the batch (under the first traced decision) and end every decision span."""
        from opentelemetry import trace

        if not traced:
            return
        merged: dict[str, tuple[int, int]] = {}
        for part in stages:  # engine batches of one stream batch: widest interval per stage
            for name, (s, e) in part.items():
                old = merged.get(name)
                merged[name] = (s, e) if old is None else (min(old[0], s), max(old[1], e))
        start = min((s for s, _ in merged.values()), default=end_ns)
        # the batch is recorded once: under a transaction whose trace the bank started if
        # there is one (that trace is the one someone will open), else the first traced
        first = next((t for t in traced if t.continued), traced[0])
        others = [trace.Link(t.span.get_span_context()) for t in traced if t is not first]
        batch = self._tracer.start_span(
            "riskstream.batch",
            context=trace.set_span_in_context(first.span),
            links=others,
            start_time=start,
            attributes={"riskstream.batch_size": size, "riskstream.traced": len(traced)},
        )
        inside = trace.set_span_in_context(batch)
        for name, (s, e) in sorted(merged.items(), key=lambda kv: kv[1][0]):
            self._tracer.start_span(f"riskstream.{name}", context=inside, start_time=s).end(e)
        batch.end(end_time=end_ns)
        link = [trace.Link(batch.get_span_context())]
        for t in traced:
            if t is not first:
                t.span.add_link(link[0].context)
            t.span.end(end_time=end_ns)

    def feedback(self, headers: Headers | None, attributes: Mapping[str, Any]) -> str | None:
        """A span for an applied label, in the alert's trace; its trace id (or None)."""
        parent = self.parent(headers)
        if parent is None:
            return None
        span = self._tracer.start_span(
            "riskstream.feedback", context=parent, attributes=dict(attributes)
        )
        span.end()
        return format(span.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        """Send what is buffered and stop (blocking: call it off the event loop)."""
        try:
            self._provider.shutdown()
        except Exception as exc:  # a collector that is away must not block a shutdown
            log.warning("tracing: the last export failed: %s", exc)


def build_tracing(settings: TracingSettings) -> Tracing | None:
    """The worker's tracing, or None when it is off (then nothing of OpenTelemetry loads)."""
    return Tracing(settings) if settings.enabled else None
