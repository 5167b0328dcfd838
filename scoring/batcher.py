"""Micro-batching: coalesce requests (stream and HTTP) into one model call.

A batch closes at ``max_batch`` requests or ``max_wait_ms`` after its first request,
whichever comes first, or at once when a caller says its group is complete
(``submit_many(..., complete=True)``: a stream batch Faust already gathered must not wait
a second time; measured, that wait was a third of the worker's in-batch latency).
Each request has its own future; a failing batch fails only its own requests (the
exception is handed to each of their futures), never the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

Req = TypeVar("Req")
Res = TypeVar("Res")

BATCH_SIZE = Histogram(
    "riskstream_batch_size",
    "Requests per model batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)


class MicroBatcher(Generic[Req, Res]):
    """``await batcher.submit(req)`` → result, computed in a batch with its neighbours."""

    def __init__(
        self,
        fn: Callable[[list[Req]], Awaitable[Sequence[Res]]],
        max_batch: int = 256,
        max_wait_ms: float = 10.0,
    ) -> None:
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_ms / 1000.0
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res], bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():  # nobody will serve these any more
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("batcher stopped"))

    async def submit(self, req: Req) -> Res:
        fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put((req, fut, False))
        return await fut

    async def submit_many(self, reqs: Sequence[Req], complete: bool = False) -> list[Res]:
        """Submit several at once; results in order (exceptions raised for the first).

        ``complete``: the group is a finished batch; close the batch once it is queued
        instead of waiting ``max_wait_ms`` for company.
        """
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in reqs]
        last = len(reqs) - 1
        for i, (req, fut) in enumerate(zip(reqs, futs, strict=True)):
            self._queue.put_nowait((req, fut, complete and i == last))
        return list(await asyncio.gather(*futs))

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            closed = first[2]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                    batch.append(item)
                    closed = closed or item[2]
                    continue
                except asyncio.QueueEmpty:
                    pass
                if closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            BATCH_SIZE.observe(len(batch))
            reqs = [r for r, _, _ in batch]
            try:
                results = await self.fn(reqs)
            except Exception as exc:  # fails this batch's requests only
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut, _), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
