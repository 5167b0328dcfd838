"""The yardstick for the end-to-end benchmark: a Faust agent that forwards every event.

Per-event ``await topic.send()`` — the plain way to write a Faust pipeline (DESIGN §9:
~1,800 events/s on this machine). Run by ``bench_e2e`` as
``python -m benchmarks.trivial_agent worker -l warn`` with BENCH_BROKER/BENCH_IN/BENCH_OUT.
``BENCH_TUNED=1`` gives it the worker's consumer tuning (streams/faust_tuning.py and the
stream buffer size), so the benchmark can show how much of the worker's lead is that
tuning and how much its batching.
"""

from __future__ import annotations

import os
from typing import Any

import faust

TUNED = os.environ.get("BENCH_TUNED") == "1"
if TUNED:
    from streams.faust_tuning import apply_eager_delivery, apply_fetch_wait
    from streams.settings import Settings

    apply_fetch_wait(Settings().kafka.fetch_max_wait_ms)
    apply_eager_delivery()
app = faust.App(
    os.environ.get("BENCH_APP", "trivial-forwarder"),
    broker=f"kafka://{os.environ.get('BENCH_BROKER', '127.0.0.1:9092')}",
    value_serializer="raw",
    key_serializer="raw",
    autodiscover=False,
    store="memory://",
    broker_session_timeout=2,
    broker_heartbeat_interval=0.3,
    broker_rebalance_timeout=5,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    topic_allow_declare=False,
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/trivial-faust"),
    **({"stream_buffer_maxsize": Settings().kafka.stream_buffer} if TUNED else {}),
)
source = app.topic(os.environ.get("BENCH_IN", "bench-in"))
sink = app.topic(os.environ.get("BENCH_OUT", "bench-out"))


@app.agent(source)
async def forward(stream: Any) -> None:
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value)


if __name__ == "__main__":
    app.main()
