"""Ack each stream batch once the broker acknowledged its decisions, in batch order,
while the next batch is scored.

Under a backlog, waiting for a batch's acks is a few milliseconds per batch in which the
worker computes nothing while the next batch is already there: then batch N+1 is scored
and published while batch N's deliveries are awaited. At most one batch waits for its
acks at a time (``add`` first waits for the one before), so the extra memory is one batch
and the events are still acked in the order consumed. Without a backlog the caller waits
(``wait``) before taking the next batch: on a shared host the ack wait is the broker's
CPU time, and overlapping it made the answers slower at a moderate rate
(docs/DESIGN-DECISIONS.md, Streaming).

At-least-once is kept: a batch's events are acked (Faust may then commit their offsets)
only after every decision of that batch and of every batch before it was delivered. A
batch whose delivery fails is never acked, nor is any batch after it: ``completed``
stops the worker, and the unacked events are consumed again after the restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


class DeliveryChain:
    """The one batch (at most) whose acks are awaited while the next one is scored."""

    def __init__(
        self,
        ack: Callable[[Any], Awaitable[Any]],
        completed: Callable[[Awaitable[Any]], Awaitable[bool]],
        track: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> None:
        """``ack`` acks one event; ``completed`` awaits a step and says whether it
        succeeded (on a failure it has already started stopping the worker); ``track``
        is given each batch's ack task (a stopping worker lets it finish)."""
        self._ack = ack
        self._completed = completed
        self._track = track
        self.last: asyncio.Task[bool] | None = None

    async def add(
        self, events: Sequence[Any], delivered: Awaitable[Any], wait: bool = False
    ) -> bool:
        """Ack ``events`` once ``delivered`` is done, after the batch before them.

        Waits for the batch before to finish first; False if it failed (the worker is
        stopping: nothing more may be acked, and ``delivered`` is not awaited).
        ``wait``: also wait for this batch's acks (no backlog: nothing to overlap)."""
        previous = self.last
        if previous is not None and not await asyncio.shield(previous):
            _close(delivered)
            return False
        self.last = asyncio.ensure_future(self._ack_when(delivered, events))
        if self._track is not None:
            self._track(self.last)
        return await self.wait() if wait else True

    async def wait(self) -> bool:
        """Until the last batch added is acked; False if it (or one before it) failed."""
        last = self.last
        return True if last is None else await asyncio.shield(last)

    async def _ack_when(self, delivered: Awaitable[Any], events: Sequence[Any]) -> bool:
        if not await self._completed(delivered):
            return False
        for event in events:
            await self._ack(event)
        return True


def _close(step: Awaitable[Any]) -> None:
    """Drop a step that will not run (a coroutine never awaited warns otherwise)."""
    close = getattr(step, "close", None)
    if close is not None:
        close()
