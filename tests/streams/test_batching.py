"""``busy_batches`` over a stand-in for a Faust stream (the batching rule, not Faust).

The worker's integration tests run it on the real broker (N in → N out, replays after
SIGKILL, rebalances); these pin down when a batch closes and when it is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from streams.batching import busy_batches


class FakeStream:
    """The parts of ``faust.Stream`` that ``busy_batches`` uses; events come from a queue."""

    def __init__(self) -> None:
        self.enable_acks = True
        self._processors: list[Any] = []
        self.current_event: Any = None
        self.acked: list[int] = []
        self.incoming: asyncio.Queue[int] = asyncio.Queue()
        self.should_stop = False
        self._drainer: asyncio.Task[None] | None = None
        self.channel = self
        self.timed_waits: list[float] = []  # the waits for company: their timeouts

    def __aiter__(self) -> FakeStream:
        return self

    def add_processor(self, fn: Any) -> None:
        self._processors.append(fn)

    def _enable_passive(self, _channel: Any) -> None:
        self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while True:
            self.current_event = await self.incoming.get()
            for fn in list(self._processors):
                await fn(self.current_event)
            self.current_event = None

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.timed_waits.append(timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.should_stop

    async def ack(self, event: int) -> None:
        self.acked.append(event)


async def test_events_that_waited_behind_a_batch_go_at_once_and_acks_follow_the_body() -> None:
    stream = FakeStream()
    seen: list[tuple[list[int], float]] = []
    linger = 0.2
    gen = busy_batches(stream, max_batch=100, linger_s=linger)
    t0 = time.monotonic()
    stream.incoming.put_nowait(1)
    async for batch in gen:
        seen.append((batch, time.monotonic() - t0))
        if len(seen) == 1:
            assert stream.acked == []  # not before the body returned
            for i in (2, 3, 4):  # arrive while the batch is processed
                stream.incoming.put_nowait(i)
            await asyncio.sleep(0.5)  # longer than the linger
            body_done = time.monotonic() - t0
        else:
            assert stream.acked == [1]
            break
    await gen.aclose()
    assert stream._drainer is not None
    stream._drainer.cancel()
    (first, at1), (second, at2) = seen
    assert first == [1] and at1 >= linger * 0.9  # an idle worker lingers for company
    assert second == [2, 3, 4]
    assert at2 - body_done < linger / 2  # they had waited their linger: no second wait
    assert stream.enable_acks is True and stream._processors == []  # restored


async def test_by_default_an_idle_worker_dispatches_at_once() -> None:
    """#22: no waiting for a batch that will not come. With the default
    ``batch.max_wait_ms`` a lone event goes to the model at once, and what arrives while
    the model is busy forms the next batch together."""
    from streams.settings import BatchSettings

    stream = FakeStream()
    linger = BatchSettings().max_wait_ms / 1000.0
    gen = busy_batches(stream, max_batch=100, linger_s=linger)
    seen: list[list[int]] = []
    stream.incoming.put_nowait(1)
    async for batch in gen:
        seen.append(batch)
        if len(seen) == 1:
            for i in (2, 3, 4):  # arrive while the model is busy with the first
                stream.incoming.put_nowait(i)
            await asyncio.sleep(0.05)
        else:
            break
    await gen.aclose()
    assert stream._drainer is not None
    stream._drainer.cancel()
    assert seen == [[1], [2, 3, 4]]
    assert stream.timed_waits == []  # neither batch waited for company


async def test_a_batch_never_exceeds_max_batch_and_nothing_is_lost() -> None:
    stream = FakeStream()
    for i in range(25):
        stream.incoming.put_nowait(i)
    got: list[list[int]] = []
    async for batch in busy_batches(stream, max_batch=10, linger_s=0.01):
        got.append(batch)
        await asyncio.sleep(0.01)
        if sum(map(len, got)) == 25:
            break
    assert stream._drainer is not None
    stream._drainer.cancel()
    assert all(len(b) <= 10 for b in got)
    assert [e for b in got for e in b] == list(range(25))
    assert stream.acked == list(range(25 - len(got[-1])))  # the last body never returned


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        asyncio.run(anext(busy_batches(FakeStream(), 0, 0.01)))


async def test_with_ack_false_the_caller_acks() -> None:
    stream = FakeStream()
    for i in range(3):
        stream.incoming.put_nowait(i)
    got: list[int] = []
    async for batch in busy_batches(stream, max_batch=10, linger_s=0.01, ack=False):
        got.extend(batch)
        if len(got) == 3:
            break
        await asyncio.sleep(0.02)  # the next batch: the body of this one has returned
    assert stream._drainer is not None
    stream._drainer.cancel()
    assert got == [0, 1, 2] and stream.acked == []
