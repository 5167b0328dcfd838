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

# Per model version (the label is a version id: a handful in force at a time) and role
# (primary, canary, shadow): what a roll-out compares (docs/deploy.md).
SCORE_BUCKETS = (0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)
VERSION_DECISIONS = Counter(
    "riskstream_version_decisions_total",
    "Events scored per model version and role, by outcome (alert, pass; shadow: would-alert).",
    ["model_version", "role", "outcome"],
)
VERSION_SCORES = Histogram(
    "riskstream_version_score",
    "Scores per model version and role.",
    ["model_version", "role"],
    buckets=SCORE_BUCKETS,
)
VERSION_LATENCY_MS = Histogram(
    "riskstream_version_latency_ms",
    "Model time per batch per model version and role (featurize, encoder, head).",
    ["model_version", "role"],
    buckets=MS_BUCKETS,
)
VERSION_ERRORS = Counter(
    "riskstream_version_errors_total",
    "Batches a model version failed to score (a canary's rows fall back to the primary).",
    ["model_version", "role"],
)
