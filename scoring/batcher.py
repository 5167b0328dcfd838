"""Micro-batching: coalesce requests (stream and HTTP) into one model call.

A batch closes at ``max_batch`` requests or ``max_wait_ms`` after its first request,
whichever comes first. Each request has its own future; a failing batch fails only its
own requests (the exception is handed to each of their futures), never the loop.
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
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res]]] = asyncio.Queue()
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
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("batcher stopped"))

    async def submit(self, req: Req) -> Res:
        fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put((req, fut))
        return await fut

    async def submit_many(self, reqs: Sequence[Req]) -> list[Res]:
        """Submit several at once; results in order (exceptions raised for the first)."""
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in reqs]
        for req, fut in zip(reqs, futs, strict=True):
            self._queue.put_nowait((req, fut))
        return list(await asyncio.gather(*futs))

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            BATCH_SIZE.observe(len(batch))
            reqs = [r for r, _ in batch]
            try:
                results = await self.fn(reqs)
            except Exception as exc:  # fails this batch's requests only
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
