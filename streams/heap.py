"""Keep what a worker builds at startup out of the garbage collector's full passes.

A started worker holds on the order of a hundred thousand long-lived Python objects (Faust
and its services, the HTTP stack, pydantic schemas, the model's Python side). CPython's
full (generation 2) collection walks every tracked object, so each one stalls the event
loop for tens of milliseconds, and every event queued behind the stall pays it: in a
latency run these passes were the largest single item in the p99 (docs/BENCHMARKS.md).

``freeze_startup_heap`` runs once the worker is ready: a full collection (startup's
cyclic garbage is freed, not kept), then ``gc.freeze()`` moves every surviving object to
the permanent generation, which collections skip. What is built afterwards is collected
as before. The cost: an object frozen here that later becomes cyclic garbage is never
freed, e.g. part of a model version swapped out by a hot reload; a reload at a time,
that is bounded by what the process held at startup.
"""

from __future__ import annotations

import gc

from prometheus_client import Gauge

FROZEN_OBJECTS = Gauge(
    "riskstream_gc_frozen_objects",
    "Objects built at startup and excluded from garbage collection passes.",
)


def freeze_startup_heap() -> int:
    """Collect, then freeze what survives; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    FROZEN_OBJECTS.set(frozen)
    return frozen
