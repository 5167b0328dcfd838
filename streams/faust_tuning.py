"""Two measured changes to how Faust's aiokafka consumer behaves; both idempotent.

Faust hard-codes choices that cost a fraud-scoring worker latency or throughput and
offers no setting for them, so we change them at the one place each is made, keeping
Faust's semantics:

* ``apply_fetch_wait``: the fetch long-poll (1,500 ms in Faust).
* ``apply_eager_delivery``: the per-message hand-over from the fetcher to the streams.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults


def apply_fetch_wait(ms: int) -> None:
    """Make Faust's aiokafka consumers use ``fetch_max_wait_ms = ms``.

    Faust passes a hard-coded 1500 ms; aiokafka reads the attribute when the consumer
    starts, so setting it right after creation is enough. On the embedded broker the
    long poll dominated produce→consume p99 (docs/BENCHMARKS.md).
    """
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    original = getattr(thread_cls, "_riskstream_original_create", None)
    if original is None:
        original = thread_cls._create_worker_consumer
        thread_cls._riskstream_original_create = original  # type: ignore[attr-defined]

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    thread_cls._create_worker_consumer = create  # type: ignore[method-assign]


def apply_eager_delivery() -> None:
    """Deliver each fetched message without four tasks when nothing has to wait.

    Faust's fetch loop hands every message to the streams with
    ``consumer.wait_first(callback(message), suspend_flow.wait())`` so that a rebalance
    can interrupt a delivery blocked on a full stream buffer. ``Service.wait_first``
    wraps the callback, the suspend event and the consumer's stopped and crashed events
    in four tasks, waits for the first and cancels the rest: a noticeable share of the
    worker's per-event budget at saturation (docs/BENCHMARKS.md), although a delivery
    almost never blocks (Faust stops fetching a partition whose buffer fills).

    Here the consumer's ``wait_first`` first runs the callback up to its first
    suspension, on the caller's stack (no task at all). A callback that finishes there has
    nothing to interrupt; its result is returned as ``wait_first`` would have. One that
    suspends continues in a task raced against the other events exactly as before, so
    a rebalance still interrupts a blocked delivery. ``wait_first`` with a timeout, or
    whose first argument is not a coroutine (an event), is left to Faust untouched.
    """
    from faust.transport.drivers import aiokafka as driver

    consumer_cls: Any = driver.Consumer
    if not getattr(consumer_cls, "_riskstream_eager", False):
        consumer_cls.wait_first = eager_wait_first(consumer_cls.wait_first)
        consumer_cls._riskstream_eager = True


def eager_wait_first(faust_wait_first: Callable[..., Awaitable[WaitResults]]) -> Any:
    """``Service.wait_first`` that runs a coroutine first argument eagerly (see above)."""

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
        first = coros[0] if coros else None
        if timeout is not None or not asyncio.iscoroutine(first):
            return await faust_wait_first(self, *coros, timeout=timeout)
        try:
            pending = first.send(None)
        except BaseException as exc:  # finished (StopIteration) or failed on the spot
            for other in coros[1:]:
                if asyncio.iscoroutine(other):
                    other.close()  # never started: close, or Python warns it was not awaited
            if not isinstance(exc, StopIteration):
                raise
            finished = exc
            if self._stopped.is_set() or self._crashed.is_set():
                return WaitResults([], [], True)
            return WaitResults([first], [finished.value], False)
        rest = _continue(first, pending)
        results = await faust_wait_first(self, rest, *coros[1:])
        return WaitResults(
            [first if done is rest else done for done in results.done],
            results.results,
            results.stopped,
        )

    return wait_first


async def _continue(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """The rest of a coroutine that already ran to its first suspension (``pending``)."""
    return await _resumed(coro, pending)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    # What a task does with a coroutine: hand what it yields (a future, or None for a
    # bare yield) to the task running us, pass back what the task sends or throws.
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation included: the coroutine sees it
            try:
                pending = coro.throw(exc)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as finished:
                return finished.value
