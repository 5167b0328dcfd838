"""Where each user's 30-day sequence lives: the ``SequenceStore`` interface and two stores.

``RedisSequenceStore`` keeps, per user, a sorted set (member = 8-byte big-endian hash of
the transaction id, score = event time in ms) and a hash (member → 53-byte record). Both
keys carry the ``{user_id}`` hash tag, so they live in one Redis Cluster slot. One Lua
script per user reads the sequence as it was, appends the new events idempotently
(``HSETNX``: the same transaction twice changes nothing), trims by event time relative
to the user's newest event (so replaying last year's file works) and by length, and
refreshes the TTL — atomically. All users of a batch go in one pipeline: one round trip.

The script returns the sequence *before* the append, so each new event is featurized
against exactly what preceded it, never against itself or later events: the same
history the training path builds from a file (train/serve parity).

Big-endian tx hashes make Redis' tie order (equal scores sort by member bytes) equal to
numpy's ``(ts, tx)`` order, so ties resolve identically everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import redis.asyncio as aioredis

from features.events import RECORD_DTYPE, RECORD_SIZE
from features.redis_retry import TRANSIENT, run_pipeline
from features.sequence_config import SequenceStoreConfig

EMPTY = np.zeros(0, dtype=RECORD_DTYPE)

# KEYS: (zset, hash) per user. ARGV: window_ms, max_length, ttl_s, record size,
# per-user event counts ("2,1,..."), timestamps ("t1,t2,..."), members (8 bytes each),
# records (record size each). A few blobs per call instead of three args per event:
# client-side command packing was the store's main cost. Each user's reply is the
# prior sequence as one concatenated blob (one bulk string, one np.frombuffer).
_APPEND_LUA = """
local window, maxlen, ttl, size = tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4])
local counts, stamps = {}, {}
for c in string.gmatch(ARGV[5], '[^,]+') do counts[#counts + 1] = tonumber(c) end
for t in string.gmatch(ARGV[6], '[^,]+') do stamps[#stamps + 1] = tonumber(t) end
local members, recs = ARGV[7], ARGV[8]
local out, e = {}, 0
for u = 1, #counts do
  local z, h = KEYS[2 * u - 1], KEYS[2 * u]
  local prior = ''
  local ids = redis.call('ZRANGE', z, 0, -1)
  if #ids > 0 then
    local vals = redis.call('HMGET', h, unpack(ids))
    local parts = {}
    for i = 1, #vals do if vals[i] then parts[#parts + 1] = vals[i] end end
    prior = table.concat(parts)
  end
  out[u] = prior
  local newest = nil
  local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if #top > 0 then newest = tonumber(top[2]) end
  for _ = 1, counts[u] do
    local ts = stamps[e + 1]
    local member = string.sub(members, e * 8 + 1, e * 8 + 8)
    if redis.call('HSETNX', h, member, string.sub(recs, e * size + 1, e * size + size)) == 1 then
      redis.call('ZADD', z, ts, member)
    end
    if newest == nil or ts > newest then newest = ts end
    e = e + 1
  end
  if newest ~= nil and counts[u] > 0 then
    local cutoff = '(' .. string.format('%d', newest - window)
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
    if #old > 0 then
      redis.call('HDEL', h, unpack(old))
      redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    end
    local count = redis.call('ZCARD', z)
    if count > maxlen then
      local extra = redis.call('ZRANGE', z, 0, count - maxlen - 1)
      redis.call('HDEL', h, unpack(extra))
      redis.call('ZREMRANGEBYRANK', z, 0, count - maxlen - 1)
    end
    redis.call('EXPIRE', z, ttl)
    redis.call('EXPIRE', h, ttl)
  end
end
return out
"""

_READ_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids == 0 then return '' end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local parts = {}
for i = 1, #vals do if vals[i] then parts[#parts + 1] = vals[i] end end
return table.concat(parts)
"""


def decode_records(blob: bytes | None) -> np.ndarray:
    """One user's packed records from Redis, already in (ts, tx) order (ZRANGE order)."""
    if not blob:
        return EMPTY
    if len(blob) % RECORD_SIZE:
        raise ValueError(f"corrupt sequence blob of {len(blob)} bytes")
    return np.frombuffer(blob, dtype=RECORD_DTYPE)


class SequenceStore(Protocol):
    """Per-user event sequences, trimmed to a time window and a length."""

    async def append_and_read(
        self, user_ids: Sequence[str], records: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Append ``records[i]`` to ``user_ids[i]``'s sequence; return each user's prior one."""
        ...

    async def append_batch(self, user_ids: Sequence[str], records: np.ndarray) -> None:
        """Append without reading."""
        ...

    async def read_batch(self, user_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Current sequences of the users, sorted by (ts, tx); empty array if unknown."""
        ...

    async def ping(self) -> bool:
        """True when the store answers (readiness)."""
        ...


def _group(user_ids: Sequence[str], records: np.ndarray) -> dict[str, np.ndarray]:
    if len(user_ids) != len(records):
        raise ValueError("user_ids and records differ in length")
    groups: dict[str, list[int]] = {}
    for i, user in enumerate(user_ids):
        groups.setdefault(user, []).append(i)
    return {u: records[idx] for u, idx in groups.items()}


class InMemorySequenceStore:
    """The same semantics as the Redis store, in a dict: training, unit tests, dry runs.

    Time-based trimming is by event time; the TTL is tracked against the newest event
    time seen by the store (a stand-in for Redis' wall clock), so tests can observe it.
    """

    def __init__(self, config: SequenceStoreConfig | None = None) -> None:
        self.config = config or SequenceStoreConfig()
        self._data: dict[str, dict[int, np.void]] = {}
        self._last_touch_ms: dict[str, int] = {}

    def expire_idle(self, now_ms: int) -> None:
        """Drop users not touched for ``ttl_s`` (Redis does this by itself)."""
        ttl_ms = self.config.ttl_s * 1000
        for user in [u for u, t in self._last_touch_ms.items() if now_ms - t > ttl_ms]:
            self._data.pop(user, None)
            self._last_touch_ms.pop(user, None)

    def _sorted(self, user: str) -> np.ndarray:
        events = self._data.get(user)
        if not events:
            return EMPTY.copy()
        arr = np.array(list(events.values()), dtype=RECORD_DTYPE)
        return arr[np.lexsort((arr["tx"], arr["ts"]))]

    async def append_and_read(
        self, user_ids: Sequence[str], records: np.ndarray
    ) -> dict[str, np.ndarray]:
        out = {}
        for user, recs in _group(user_ids, records).items():
            out[user] = self._sorted(user)
            events = self._data.setdefault(user, {})
            for rec in recs:
                events.setdefault(int(rec["tx"]), rec.copy())
            arr = self._sorted(user)
            newest = int(arr["ts"].max())
            keep = arr[arr["ts"] >= newest - self.config.window_ms][-self.config.max_length :]
            self._data[user] = {int(r["tx"]): r for r in keep}
            self._last_touch_ms[user] = newest
        return out

    async def append_batch(self, user_ids: Sequence[str], records: np.ndarray) -> None:
        await self.append_and_read(user_ids, records)

    async def read_batch(self, user_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {u: self._sorted(u) for u in dict.fromkeys(user_ids)}

    async def ping(self) -> bool:
        return True


class RedisSequenceStore:
    """The production store (redis-py asyncio, hiredis parser when installed)."""

    def __init__(
        self,
        client: aioredis.Redis,
        config: SequenceStoreConfig | None = None,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.client = client
        self.config = config or SequenceStoreConfig()
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self._append = client.register_script(_APPEND_LUA)
        self._read = client.register_script(_READ_LUA)

    @classmethod
    def from_url(
        cls, url: str, config: SequenceStoreConfig | None = None, **kwargs: Any
    ) -> RedisSequenceStore:
        """Build a store with its own client (no I/O until first use)."""
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        return cls(client, config, **kwargs)

    def keys(self, user_id: str) -> tuple[str, str]:
        """(sorted set, hash) keys, hash-tagged on the user id."""
        base = f"{self.config.key_prefix}seq:{{{user_id}}}"
        return f"{base}:z", f"{base}:h"

    async def _run(self, build: Any) -> list[Any]:
        """Execute a freshly built pipeline with the shared retry policy."""
        return await run_pipeline(self.client, build, self.retry_attempts, self.retry_backoff_s)

    async def append_and_read(
        self, user_ids: Sequence[str], records: np.ndarray
    ) -> dict[str, np.ndarray]:
        if len(user_ids) != len(records):
            raise ValueError("user_ids and records differ in length")
        cfg = self.config
        users = list(dict.fromkeys(user_ids))
        code = {u: i for i, u in enumerate(users)}
        codes = np.fromiter((code[u] for u in user_ids), np.int64, len(user_ids))
        order = np.argsort(codes, kind="stable")  # one sort; users stay contiguous
        flat = np.ascontiguousarray(records[order])
        counts = np.bincount(codes, minlength=len(users))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        # one script call per batch; per user on Redis Cluster (a script's keys must
        # share one slot there, and each user's keys share the {user_id} slot)
        calls = [(i, i + 1) for i in range(len(users))] if cfg.cluster_mode else [(0, len(users))]

        async def build(pipe: Any) -> None:
            for lo, hi in calls:
                part = flat[bounds[lo] : bounds[hi]]
                args: list[Any] = [
                    cfg.window_ms,
                    cfg.max_length,
                    cfg.ttl_s,
                    RECORD_SIZE,
                    ",".join(map(str, counts[lo:hi].tolist())),
                    ",".join(map(str, part["ts"].tolist())),
                    part["tx"].astype(">u8").tobytes(),
                    part.tobytes(),
                ]
                keys = [k for u in users[lo:hi] for k in self.keys(u)]
                await self._append(keys=keys, args=args, client=pipe)

        replies = [blob for reply in await self._run(build) for blob in reply]
        return {u: decode_records(r) for u, r in zip(users, replies, strict=True)}

    async def append_batch(self, user_ids: Sequence[str], records: np.ndarray) -> None:
        await self.append_and_read(user_ids, records)

    async def read_batch(self, user_ids: Sequence[str]) -> dict[str, np.ndarray]:
        users = list(dict.fromkeys(user_ids))

        async def build(pipe: Any) -> None:
            for user in users:
                await self._read(keys=list(self.keys(user)), args=[], client=pipe)

        replies = await self._run(build)
        return {u: decode_records(r) for u, r in zip(users, replies, strict=True)}

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except TRANSIENT:
            return False

    async def close(self) -> None:
        await self.client.aclose()
