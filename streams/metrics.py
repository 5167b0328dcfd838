"""Prometheus metrics of the streaming service (``riskstream_`` prefix, ms buckets, no user ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from scoring.metrics import MS_BUCKETS

E2E_BUCKETS = (*MS_BUCKETS, 10_000, 30_000, 60_000)

EVENTS = Counter("riskstream_events_total", "Input events by outcome.", ["outcome"])
DEAD_LETTERS = Counter("riskstream_dead_letters_total", "Events sent to the DLQ.", ["reason"])
ALERTS = Counter("riskstream_alerts_total", "Alerts published.")
THRESHOLD_UPDATES = Counter(
    "riskstream_threshold_feedback_total", "Feedback labels applied.", ["label"]
)
LABELS_BY_SOURCE = Counter(
    "riskstream_labels_total", "Feedback labels applied, by who confirmed them.", ["source"]
)
STAGE_MS = Histogram(
    "riskstream_stage_latency_ms", "Time per batch in each stage.", ["stage"], buckets=MS_BUCKETS
)
INGEST_TO_PUBLISH_MS = Histogram(
    "riskstream_ingest_to_publish_ms",
    "From the worker receiving an event to its decision acked.",
    buckets=E2E_BUCKETS,
)
EVENT_TO_PUBLISH_MS = Histogram(
    "riskstream_event_time_to_publish_ms",
    "From the transaction's event time to its decision acked (includes upstream delay).",
    buckets=E2E_BUCKETS,
)
DELIVERY_FAILURES = Counter(
    "riskstream_delivery_failures_total",
    "Messages whose delivery the broker failed (each is produced again or its batch replayed).",
)
DELIVERY_RETRIES = Counter(
    "riskstream_delivery_retries_total", "Batches that produced failed messages again."
)
MODEL_INFO = Info("riskstream_model", "The model serving decisions.")
READY = Gauge("riskstream_ready", "1 when the worker is ready to serve.")


def reason_class(error: str) -> str:
    """Low-cardinality class of a decode error for the DLQ metric label."""
    if error.startswith("field '"):
        return "field:" + error.split("'")[1].split(".")[0][:32]
    for key, name in (
        ("UTF-8", "encoding"),
        ("not JSON", "json"),
        ("over the", "size"),
        ("nested", "depth"),
        ("JSON object", "shape"),
        ("constant", "json"),
    ):
        if key in error:
            return name
    return "other"


# Model roll-out (docs/deploy.md, "Rolling out a model"); per-version decision metrics are
# in ``scoring.metrics``.
MODEL_ROLES = Gauge(
    "riskstream_model_role",
    "1 for each model version in a role on this worker.",
    ["model_version", "role"],
)
MODEL_GENERATION = Gauge(
    "riskstream_model_roles_generation", "The registry pointer generation this worker applies."
)
MODEL_CANARY_SHARE = Gauge(
    "riskstream_model_canary_share", "Share of card holders the canary decides for (0-1)."
)
MODEL_LOAD_FAILURES = Counter(
    "riskstream_model_load_failures_total",
    "Registry versions this worker could not load (the current one kept serving).",
    ["model_version"],
)
MODEL_SWAPS = Counter("riskstream_model_swaps_total", "Role changes applied without a restart.")
CANARY_ROLLBACKS = Counter(
    "riskstream_canary_rollbacks_total",
    "Automatic canary rollbacks, by cause (error_rate, alert_ratio).",
    ["cause"],
)
