"""Micro-batches from a Faust stream, shaped for a worker that is busy most of the time.

Faust's ``Stream.take_events(n, within)`` stops collecting while its caller processes a
batch, and afterwards always waits ``within`` for the buffer to fill, so every event
that arrived during a batch waited for that batch *and* a full window: a window of
latency per event for no gain (docs/BENCHMARKS.md, "Figures behind code decisions").

``busy_batches`` keeps collecting while a batch is processed (up to ``max_batch``
events; then the stream waits: back-pressure), and closes a batch ``linger_s`` after its
*first event arrived* (or when full), as the HTTP micro-batcher does. Events that queued
during a long batch have waited their linger already and go out at once; a fresh event
waits for company only for what is left of its own linger. So no event waits longer
than one linger plus the batch ahead of it, and batches still grow with the load.

At-least-once, as with ``take_events``: acks are off on the stream while this runs, and
a batch's events are acked (Faust may then commit their offsets) only when the loop
body that received them has returned. An event collected but not yet yielded when the
worker stops is never acked, so it is consumed again after the restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any


async def busy_batches(
    stream: Any, max_batch: int, linger_s: float, *, ack: bool = True
) -> AsyncIterator[list[Any]]:
    """Yield lists of Faust events; see the module docstring for when a batch closes.

    ``ack=False``: the caller acks each batch's events itself (``stream.ack``), e.g.
    after the loop body has moved on (``streams.delivery_chain``)."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    buffer: list[Any] = []
    first_at = 0.0  # time.monotonic() when the buffer's oldest event arrived
    arrived = asyncio.Event()  # the buffer is not empty
    full = asyncio.Event()  # the buffer holds max_batch events
    room = asyncio.Event()  # the buffer is below max_batch
    room.set()

    async def collect(value: Any) -> Any:
        nonlocal first_at
        # a stream processor: Faust calls it for each event, from its draining task
        while len(buffer) >= max_batch and not stream.should_stop:
            room.clear()
            await stream.wait_for_stopped(room)
        if stream.should_stop:
            return value  # not buffered, never acked: consumed again after a restart
        event = stream.current_event
        if event is None:
            raise RuntimeError("a stream processor ran without a current event")
        if not buffer:
            first_at = time.monotonic()
        buffer.append(event)
        arrived.set()
        if len(buffer) >= max_batch:
            full.set()
        return value

    acks_were = stream.enable_acks
    stream.enable_acks = False  # acked below, once the batch's loop body returned
    stream.add_processor(collect)
    stream._enable_passive(stream.channel.__aiter__())  # Faust drains the channel for us
    try:
        while not stream.should_stop:
            if not buffer:
                await stream.wait_for_stopped(arrived)
            left = first_at + linger_s - time.monotonic()
            if left > 0 and len(buffer) < max_batch and not stream.should_stop:
                await stream.wait_for_stopped(full, timeout=left)
            if stream.should_stop or not buffer:
                break
            batch = buffer[:]
            buffer.clear()
            arrived.clear()
            full.clear()
            room.set()
            yield batch
            if ack:
                for event in batch:
                    await stream.ack(event)
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(collect)
