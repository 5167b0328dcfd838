"""Micro-batching: coalesce requests (stream and HTTP) into one model call.

A batch closes at ``max_batch`` requests or ``max_wait_ms`` after its first request,
whichever comes first, or at once when a caller says its group is complete
(``submit_many(..., complete=True)``: a stream batch Faust already gathered must not wait
a second time: that wait was a large share of the worker's in-batch latency). The worker
runs it with ``max_wait_ms`` 0 (``batch.idle_linger_ms``): a batch takes whatever queued
while the model was busy and never waits for requests that may not come.
A failing batch fails only the groups in it (the exception is handed to their futures),
never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import Histogram

Req = TypeVar("Req")
Res = TypeVar("Res")

BATCH_SIZE = Histogram(
    "riskstream_batch_size",
    "Requests per model batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)


@dataclass(eq=False)
class _Group(Generic[Req, Res]):
    """Requests submitted together; one future for all of them."""

    reqs: Sequence[Req]
    future: asyncio.Future[list[Res]]
    complete: bool
    results: list[Any] = field(default_factory=list)
    taken: int = 0  # requests handed to batches so far
    done: int = 0  # results received so far

    def __post_init__(self) -> None:
        self.results = [None] * len(self.reqs)


class MicroBatcher(Generic[Req, Res]):
    """``await batcher.submit(req)`` → result, computed in a batch with its neighbours.

    A group (``submit_many``) travels as one queue item with one future: a future, a
    ``gather`` and their callbacks per event were 5 % of the worker's event-loop time at
    saturation. A group larger than what is left of a batch continues in the next one.
    """

    def __init__(
        self,
        fn: Callable[[list[Req]], Awaitable[Sequence[Res]]],
        max_batch: int = 256,
        max_wait_ms: float = 10.0,
    ) -> None:
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Group[Req, Res]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._carry: _Group[Req, Res] | None = None  # a group split over batches
        self._inflight: list[_Group[Req, Res]] = []

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        waiting = [*self._inflight, *([self._carry] if self._carry else [])]
        while not self._queue.empty():  # nobody will serve these any more
            waiting.append(self._queue.get_nowait())
        for group in waiting:
            if not group.future.done():
                group.future.set_exception(RuntimeError("batcher stopped"))
        self._carry, self._inflight = None, []

    async def submit(self, req: Req) -> Res:
        return (await self.submit_many([req]))[0]

    async def submit_many(self, reqs: Sequence[Req], complete: bool = False) -> list[Res]:
        """Submit several at once; results in order (a failed batch raises its error).

        ``complete``: the group is a finished batch; close the batch once it is queued
        instead of waiting ``max_wait_ms`` for company.
        """
        if not reqs:
            return []
        group: _Group[Req, Res] = _Group(reqs, asyncio.get_running_loop().create_future(), complete)
        self._queue.put_nowait(group)
        return await group.future

    async def _next_batch(self) -> list[tuple[_Group[Req, Res], int, int]]:
        """Slices ``(group, lo, hi)`` of at most ``max_batch`` requests in all."""
        group = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        while group.future.done():  # failed in an earlier batch, or its caller gave up
            group = await self._queue.get()
        parts: list[tuple[_Group[Req, Res], int, int]] = []
        n, closed = 0, False
        deadline = time.monotonic() + self.max_wait_s
        while True:
            take = min(len(group.reqs) - group.taken, self.max_batch - n)
            parts.append((group, group.taken, group.taken + take))
            group.taken += take
            n += take
            if group.taken < len(group.reqs):  # the batch is full; the rest goes next
                self._carry = group
                break
            closed = closed or group.complete
            if n >= self.max_batch or closed:
                break
            following = await self._following(deadline)
            if following is None:
                break
            group = following
        return parts

    async def _following(self, deadline: float) -> _Group[Req, Res] | None:
        """The next live group queued before ``deadline``, or None."""
        while True:
            try:
                group = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    group = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    return None
            if not group.future.done():
                return group

    async def _run(self) -> None:
        while True:
            parts = await self._next_batch()
            self._inflight = [g for g, _, _ in parts]
            reqs = [r for g, lo, hi in parts for r in g.reqs[lo:hi]]
            BATCH_SIZE.observe(len(reqs))
            try:
                results = await self.fn(reqs)
            except Exception as exc:  # fails this batch's groups only
                for g, _, _ in parts:
                    if not g.future.done():
                        g.future.set_exception(exc)
                continue
            at = 0
            for g, lo, hi in parts:
                g.results[lo:hi] = results[at : at + hi - lo]
                at += hi - lo
                g.done += hi - lo
                if g.done == len(g.reqs) and not g.future.done():
                    g.future.set_result(g.results)
            self._inflight = []
