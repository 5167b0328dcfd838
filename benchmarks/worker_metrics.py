"""Where a worker's time went during a benchmark phase: its own Prometheus histograms,
read before and after the phase, as per-batch means and batch counts.

A produce → decision percentile says how long a decision took, not which part of the
worker it waited on; the worker already times each batch's stages
(``riskstream_stage_latency_ms``, ``riskstream_model_latency_ms``), so the difference
of two scrapes is that split for exactly the phase, at no cost to the run.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: histogram families reported, by the label that names their parts
HISTOGRAMS = {
    "riskstream_stage_latency_ms": "stage",
    "riskstream_model_latency_ms": "stage",
    "riskstream_ingest_to_publish_ms": "",
}
COUNTERS = {"riskstream_embedding_cache": "outcome"}  # the family drops "_total"

Scrape = dict[str, float]


def scrape(port: int, timeout_s: float = 5) -> Scrape:
    """The reported histograms' ``_sum``/``_count`` and counters' values, by name and part."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        return parse(r.read().decode())


def parse(text: str) -> Scrape:
    """``scrape``'s figures from a Prometheus text exposition."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        label = HISTOGRAMS.get(family.name, COUNTERS.get(family.name))
        if label is None:
            continue
        for s in family.samples:
            wanted = ("_sum", "_count") if family.name in HISTOGRAMS else ("_total",)
            if not s.name.endswith(wanted):  # not the buckets, not ``_created``
                continue
            part = s.labels.get(label, "") if label else ""
            suffix = s.name.rsplit("_", 1)[1] if family.name in HISTOGRAMS else "total"
            out[f"{family.name}{{{part}}}_{suffix}"] = s.value
    return out


def phase_split(before: Scrape, after: Scrape) -> dict[str, Any]:
    """Per part: batches (or events) timed in the phase and their mean ms; counters' deltas."""
    split: dict[str, Any] = {}
    for key, total in after.items():
        delta = total - before.get(key, 0.0)
        if key.endswith("_count"):
            base = key[: -len("_count")]
            ms = after.get(base + "_sum", 0.0) - before.get(base + "_sum", 0.0)
            split[base] = {"n": int(delta), "mean_ms": round(ms / delta, 3) if delta else None}
        elif key.endswith("_total"):
            split[key[: -len("_total")]] = int(delta)
    return split
