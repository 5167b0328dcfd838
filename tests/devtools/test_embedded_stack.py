"""The fixtures' servers are real: Kafka protocol with consumer groups, Redis with Lua."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.integration


def _consume(conf: dict[str, object], topic: str, n: int, timeout_s: float = 40.0) -> list[bytes]:
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    got.append(msg.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def test_10k_messages_consumed_committed_and_resumed_without_loss_or_duplicates(
    stack, make_topics, consumer_conf
) -> None:
    (topic,) = make_topics("fixture", partitions=3)
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 5})
    for i in range(10_000):
        producer.produce(topic, key=str(i % 97), value=str(i).encode())
        producer.poll(0)
    assert producer.flush(30) == 0

    conf = consumer_conf()
    first = _consume(conf, topic, 6_000)
    assert len(first) >= 6_000
    # a new consumer in the same group resumes after the committed offsets
    rest = _consume(conf, topic, 10_000 - len(first))
    values = [int(v) for v in first + rest]
    assert len(values) == 10_000
    assert sorted(values) == list(range(10_000))


async def test_redis_pipeline_and_lua_round_trip(stack) -> None:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.zadd("{u1}:z", {"a": 1, "b": 2})
            pipe.zrange("{u1}:z", 0, -1, withscores=True)
            _, members = await pipe.execute()
        assert members == [(b"a", 1.0), (b"b", 2.0)]
        script = client.register_script(
            "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[1], ARGV[2])"
        )
        assert await script(keys=["{u1}:n"], args=[40, 2]) == 42
    finally:
        await client.aclose()


@pytest.mark.slow
def test_stack_command_prints_urls_and_ctrl_c_leaves_no_child() -> None:
    from streams.devtools.embedded import die_with_parent

    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "stack"],
        preexec_fn=die_with_parent,  # a killed test run must not leave this behind
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kafka_line = proc.stdout.readline()  # type: ignore[union-attr]
        redis_line = proc.stdout.readline()  # type: ignore[union-attr]
        assert kafka_line.startswith("kafka  127.0.0.1:"), kafka_line
        assert redis_line.startswith("redis  redis://127.0.0.1:"), redis_line
        bootstrap = kafka_line.split()[1]
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("transactions", value=b"hello")
        assert producer.flush(10) == 0
        import redis as syncredis

        with syncredis.Redis.from_url(redis_line.split()[1]) as client:
            assert client.ping()
        children = _children(proc.pid)
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == 0
    for pid in children:
        assert not _alive(pid), f"child {pid} survived Ctrl-C"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"
