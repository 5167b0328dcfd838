"""Acks in batch order, with one batch's wait for the broker overlapping the next batch.

The worker used to wait for a batch's deliveries before it took the next batch, so at
1,000 tx/s about a quarter of every cycle went on waiting for the broker's acks
(docs/BENCHMARKS.md, "the batch cycle at 1,000/s"). Now a batch's ``finish`` (its
deliveries and threshold write) runs while the next batch is scored and published.

The rules that keep at-least-once delivery:

* a batch's events are acked only after its own ``finish`` returned **and** every
  earlier batch was acked: Kafka commits offsets, so an ack must not overtake one;
* a failed ``finish`` acks nothing of its batch or of any later one, and stops the worker
  (the ``completed`` callback): the restart replays them all, and decisions that were
  already published are published again under the same ids;
* at most one batch waits for its acks while the next one is scored: ``submit`` waits
  for the batch before to be acked before it starts this one's ``finish``. A slow broker
  thus slows the worker down (back-pressure) instead of piling up unacked batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class AckChain:
    """Finishes and acks batches in order, each in the background of the next batch."""

    def __init__(self, completed: Callable[[Awaitable[Any]], Awaitable[bool]]) -> None:
        """``completed(step)`` awaits a step and returns False when it failed (after
        stopping the worker); the worker's loop passes its own failure policy."""
        self._completed = completed
        self._last: asyncio.Task[bool] | None = None

    async def submit(
        self, finish: Callable[[], Awaitable[Any]], ack: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[bool] | None:
        """Once the batch before is acked, start ``finish()`` then ``ack()`` in the
        background and return their task. None when an earlier batch failed: then
        nothing more may be acked, and nothing was started."""
        previous = self._last
        if previous is not None and not await asyncio.shield(previous):
            return None
        self._last = asyncio.ensure_future(self._finish_then_ack(finish, ack))
        return self._last

    async def drain(self) -> bool:
        """Wait for the last batch's acks; False if a batch failed."""
        return True if self._last is None else await asyncio.shield(self._last)

    async def _finish_then_ack(
        self, finish: Callable[[], Awaitable[Any]], ack: Callable[[], Awaitable[None]]
    ) -> bool:
        if not await self._completed(finish()):
            return False
        await ack()
        return True
