"""Prometheus metrics of the scoring engine (module-level, millisecond buckets, no user ids)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

NONFINITE_FALLBACKS = Counter(
    "riskstream_nonfinite_fallbacks_total",
    "Model outputs that were not finite and were replaced by the fallback score.",
)
MODEL_LATENCY_MS = Histogram(
    "riskstream_model_latency_ms",
    "Model time per batch (encoder + head).",
    ["stage"],
    buckets=MS_BUCKETS,
)
CACHE_EVENTS = Counter(
    "riskstream_embedding_cache_total", "Embedding cache lookups by outcome.", ["outcome"]
)
LABELS_UNMATCHED = Counter(
    "riskstream_labels_unmatched_total",
    "Labels for a transaction not in the card's stored history (unknown, or older than the "
    "window): the threshold still moves; no similar case is learned from them.",
)
