"""Where each user's 30-day sequence lives: the ``SequenceStore`` interface and two stores.

``RedisSequenceStore`` keeps, per user, **one string**: the user's 53-byte records,
concatenated in ``(ts, tx)`` order. The key carries the ``{user_id}`` hash tag (Redis
Cluster). One Lua script per batch, for all its users, does per user, atomically:

* ``GET`` the sequence as it was: returned to the client, so each new event is featurized
  against exactly what preceded it (train/serve parity);
* skip events already stored (idempotent on the transaction id: a plain substring search
  for the 8-byte tx hash, accepted only at a record's tx offset);
* append in order: the usual case, a string append, because the client sends each user's
  new events sorted; a late event is inserted at its place (scan back from the end);
* trim relative to the newest event time (not the wall clock: replaying last year's file
  works) and to the maximum length: the string is sorted, so both cut its front;
* ``SET … EX ttl`` once, so idle users vanish.

Why a string and not a sorted set + hash (the first layout): reading every hash field
back and concatenating them in Lua cost server time in proportion to the history; one
``GET`` of the whole string costs about as much as one field (docs/BENCHMARKS.md).
``read_batch`` is one pipelined ``GET`` per user.

Ties in event time order by the tx hash (as an unsigned integer), like numpy's
``lexsort((tx, ts))`` everywhere else, so ties resolve identically in training and serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from features.events import RECORD_DTYPE, RECORD_SIZE
from scoring.state.cluster_calls import item_rows
from scoring.state.redis_retry import (
    TRANSIENT,
    LuaScript,
    RedisClient,
    run_pipeline,
)
from scoring.state.sequence_config import SequenceStoreConfig

EMPTY = np.zeros(0, dtype=RECORD_DTYPE)
# The script reads a record's event time at byte 0 and its tx hash at byte 8 (both
# little-endian, as RECORD_DTYPE lays them out; tests/features pins the offsets).

# KEYS: one per user. ARGV: window_ms, max_length, ttl_s, record size, per-user event
# counts ("2,1,..."), the new records (record size each; each user's sorted by (ts, tx)).
# Returns each user's prior sequence as one blob.
_APPEND_LUA = """
local window, maxlen, ttl, size = tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4])
local recs = ARGV[6]
local byte, sub, find = string.byte, string.sub, string.find

local function ts_at(s, i)  -- event time of record i (0-based); little-endian int64
  local a, b, c, d, e, f, g, h = byte(s, i * size + 1, i * size + 8)
  return a + 256 * (b + 256 * (c + 256 * (d + 256 * (e + 256 * (f + 256 * (g + 256 * h))))))
end

local function after(s, i, r, j)  -- is record i of s after record j of r in (ts, tx) order?
  local ti, tj = ts_at(s, i), ts_at(r, j)
  if ti ~= tj then return ti > tj end
  for k = 16, 9, -1 do  -- tx: little-endian uint64, most significant byte last
    local x, y = byte(s, i * size + k), byte(r, j * size + k)
    if x ~= y then return x > y end
  end
  return false
end

local function stored(s, tx)  -- is this tx hash at a record's tx offset?
  local from = 1
  while true do
    local p = find(s, tx, from, true)
    if not p then return false end
    if (p - 1) % size == 8 then return true end
    from = p + 1
  end
end

-- every read before any write: on a cluster a key this node does not serve fails the
-- call here, before it has changed anything
local out, e, u = {}, 0, 0
for i = 1, #KEYS do out[i] = redis.call('GET', KEYS[i]) or '' end
for c in string.gmatch(ARGV[5], '[^,]+') do
  u = u + 1
  local key = KEYS[u]
  local seq = out[u]
  local n, changed = #seq / size, false
  for _ = 1, tonumber(c) do
    local rec = sub(recs, e * size + 1, e * size + size)
    if not stored(seq, sub(rec, 9, 16)) then
      if n == 0 or after(rec, 0, seq, n - 1) then
        seq = seq .. rec
      else  -- a late event: insert after the last record not after it
        local j = n - 1
        while j >= 0 and after(seq, j, rec, 0) do j = j - 1 end
        seq = sub(seq, 1, (j + 1) * size) .. rec .. sub(seq, (j + 1) * size + 1)
      end
      n, changed = n + 1, true
    end
    e = e + 1
  end
  if changed then
    local cutoff, drop = ts_at(seq, n - 1) - window, 0
    while drop < n and ts_at(seq, drop) < cutoff do drop = drop + 1 end
    if n - drop > maxlen then drop = n - maxlen end
    if drop > 0 then seq = sub(seq, drop * size + 1) end
    redis.call('SET', key, seq, 'EX', ttl)
  end
end
return out
"""


def decode_records(blob: bytes | None) -> np.ndarray:
    """One user's packed records from Redis, already in (ts, tx) order."""
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
        client: RedisClient,
        config: SequenceStoreConfig | None = None,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.client = client
        self.config = config or SequenceStoreConfig()
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self._append = LuaScript(client, _APPEND_LUA, check_keys=False)  # reads first

    def key(self, user_id: str) -> str:
        """The user's key, hash-tagged on the user id."""
        return f"{self.config.key_prefix}seq:{{{user_id}}}"

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
        # one sort: users stay contiguous, each user's new events in (ts, tx) order
        order = np.lexsort((records["tx"], records["ts"], codes))
        flat = np.ascontiguousarray(records[order])
        counts = np.bincount(codes, minlength=len(users))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        head = [cfg.window_ms, cfg.max_length, cfg.ttl_s, RECORD_SIZE]
        keys = [self.key(u) for u in users]

        user_of_row = codes[order]

        def build(idx: list[int]) -> tuple[list[str], list[Any]]:
            part = flat[item_rows(idx, bounds, user_of_row)]
            summary = ",".join(map(str, counts[idx].tolist()))
            return [keys[i] for i in idx], [*head, summary, part.tobytes()]

        replies = await self._append.run_grouped(
            keys, build, cfg.cluster_mode, self.retry_attempts, self.retry_backoff_s
        )
        out = {}
        for idx, blobs in replies:
            for i, blob in zip(idx, blobs, strict=True):
                out[users[i]] = decode_records(blob)
        return {u: out[u] for u in users}

    async def append_batch(self, user_ids: Sequence[str], records: np.ndarray) -> None:
        await self.append_and_read(user_ids, records)

    async def read_batch(self, user_ids: Sequence[str]) -> dict[str, np.ndarray]:
        users = list(dict.fromkeys(user_ids))

        async def build(pipe: Any) -> None:
            for user in users:
                pipe.get(self.key(user))

        replies = await self._run(build)
        return {u: decode_records(r) for u, r in zip(users, replies, strict=True)}

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except TRANSIENT:
            return False

    async def close(self) -> None:
        await self.client.aclose()
