"""The benchmarks' CPU meter reads a Redis server's CPU from the server itself (``INFO
cpu``, microseconds) instead of ``/proc`` (10 ms ticks)."""

from __future__ import annotations

import redis

from benchmarks.common import CpuMeter, redis_cpu_seconds
from streams.devtools.embedded import EmbeddedStack

# about 20 ms of Lua arithmetic on this host: far below a /proc tick's 10 ms resolution
# summed over a few calls, well above INFO cpu's microseconds
_BUSY = "local x = 0 for i = 1, 400000 do x = x + i % 7 end return x"


def test_redis_cpu_is_read_from_the_server_in_microseconds(stack: EmbeddedStack) -> None:
    port = stack.redis.port
    meter = CpuMeter({}, redis_ports={"redis": port})
    before = redis_cpu_seconds(port)
    with redis.Redis(host="127.0.0.1", port=port) as client:
        for _ in range(3):
            client.eval(_BUSY, 0)
    used = redis_cpu_seconds(port) - before
    assert used > 0.003  # the scripts' own work shows, not just a tick boundary
    per_event = meter.per_event_ms(3)["redis"]
    assert per_event * 3 >= used * 1000 * 0.9  # the meter saw (at least) the same work
