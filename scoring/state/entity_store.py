"""Where merchant and device profiles live: the ``EntityStore`` interface and two stores.

The arithmetic is ``features.entity_profile``'s; this module only moves it next to the
data. ``RedisEntityStore`` keeps up to five keys per entity, all under the entity's hash tag
(``{m:<hash>}`` / ``{d:<hash>}``) so they share a Redis Cluster slot; a script is given the
base key and derives the others (same slot):

* ``…`` a string: the update time, the card count, the labels held, the decayed
  counters and when the card set's TTL runs out, as little-endian doubles (``struct``:
  nothing rounds through text);
* ``…:c`` a sorted set: card → last visit (capped);
* ``…:f`` / ``…:fa`` confirmed frauds (sorted by the time they became known) and their
  amounts; ``…:g`` confirmed legit. Only entities with labels have these, and only they
  pay for label lookups.

One script call per batch reads every entity's statistics before each of its events and
adds the new events (on a Redis Cluster, one call per node: ``LuaScript.run_grouped``).
The events travel as one packed binary argument and the statistics come back as one
binary reply: building and parsing a handful of strings per event cost the worker more
than the script itself.
Idempotence comes from the card store: the engine asks only for events that were new
there to be written, so a replayed event reads and changes nothing. A label is one call
per entity; the first label of a transaction wins, a correction (fraud → legit) moves it.
Every key expires after ``ttl_s`` without a write, the card set up to an eighth of that
later (its TTL is refreshed every few days, not every batch: ``_STATE_LUA``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from features.entity_profile import (
    COUNTERS,
    DAY_MS,
    ENTITY_KINDS,
    LABEL_WINDOW_MS,
    N_STATS,
    EntityProfileConfig,
    EntityProfiles,
    card_member,
)
from scoring.state.cluster_calls import item_rows
from scoring.state.redis_retry import LuaScript, RedisClient

_KIND_TAG = {"merchant": "m", "device": "d"}
#: one event as the observe script reads it (25 bytes, packed): time, card, amount, write
EVENT_DTYPE = np.dtype([("t", "<f8"), ("card", ">u8"), ("amount", "<f8"), ("write", "u1")])

#: the state string: update time, cards in the set, labels held, the counters, and when
#: (server seconds) the card set's TTL runs out (written at the end, so the header keeps its
#: byte offsets; a state written before that field existed reads it as 0)
_N_STATE = 3 + len(COUNTERS) + 1

# Shared by both scripts. ``keep_cards``: the card set outlives the state. Its TTL is set
# ``ttl`` + an eighth ahead, and refreshed only when a write of the state (which sets the
# state's TTL to ``ttl``) would otherwise outlive it: an EXPIRE every few days per entity
# instead of one per batch (docs/BENCHMARKS.md). A state that has expired may leave its
# card set behind for up to that eighth, so ``load_state`` (a state string, or nil, as a
# table of _N_STATE numbers) deletes the card set when there is no state.
_STATE_LUA = f"""
local NSTATE = {_N_STATE}
local STATE = '<' .. string.rep('d', NSTATE)
local OLD_LEN = 8 * (NSTATE - 1)
local function load_state(blob, c)
  local st = {{}}
  if not blob then
    redis.call('DEL', c)
    for i = 1, NSTATE do st[i] = 0 end
  elseif #blob == OLD_LEN then
    st = {{struct.unpack(string.sub(STATE, 1, NSTATE), blob)}}
    st[NSTATE] = 0
  else
    st = {{struct.unpack(STATE, blob)}}
  end
  st[NSTATE + 1] = nil  -- struct.unpack's last value is the next position
  return st
end
local NOW = tonumber(redis.call('TIME')[1])
local function keep_cards(c, st, ttl)
  if st[NSTATE] < NOW + ttl then
    local ahead = ttl + math.floor(ttl / 8)
    -- no card set yet (a label before any event): nothing is known to hold a TTL
    st[NSTATE] = redis.call('EXPIRE', c, ahead) == 1 and NOW + ahead or 0
  end
end
"""

# KEYS: one base key per entity. ARGV: ttl_s, card cap, card slack, per-entity event counts
# (uint32 each), the events (EVENT_DTYPE, each entity's in (ts, tx) order).
# Returns one binary string: N_STATS doubles per event, in argument order.
_OBSERVE_LUA = (
    _STATE_LUA
    + """
local ttl, cap, slack = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local taus = {"""
    + ", ".join(str(tau) for _, tau in COUNTERS)
    + """}
local nc = #taus
local DAY, WEEK, MONTH = """
    + f"{DAY_MS}, {7 * DAY_MS}, {LABEL_WINDOW_MS}"
    + """
local exp, max, call, pack, unpack_s = math.exp, math.max, redis.call, struct.pack,
  struct.unpack
local STATS = '<' .. string.rep('d', nc + 5)
local counts, events = ARGV[4], ARGV[5]
local out, pos = {}, 1
-- every entity's state before any write: on a cluster a key this node does not serve
-- fails the call here, before it has counted anything
local blobs = {}
for ent = 1, #KEYS do blobs[ent] = call('GET', KEYS[ent]) end
for ent = 1, #KEYS do
  local h = KEYS[ent]
  local c, f, fa, g = h .. ':c', h .. ':f', h .. ':fa', h .. ':g'
  local count = unpack_s('<I4', counts, (ent - 1) * 4 + 1)
  -- the state: update time, cards in the set, labels held, the counters (doubles)
  local blob = blobs[ent]
  local st = load_state(blob, c)
  local updated, ncards, labelled = st[1], st[2], st[3] > 0
  local counters = {}
  for i = 1, nc do counters[i] = st[3 + i] end
  local dirty = false
  for _ = 1, count do
    local t, card, amount, write
    t, card, amount, write, pos = unpack_s('<dc8dB', events, pos)
    local dt = t - updated
    local stats = {}
    for i = 1, nc do stats[i] = counters[i] * exp(-max(0, dt) / taus[i]) end
    local last = call('ZSCORE', c, card)
    if last then last = tonumber(last) end
    stats[nc + 1] = last and 0 or 1
    if labelled then  -- most entities have no label: no label calls for them
      local n30 = call('ZCOUNT', f, t - MONTH, t)
      local total = 0
      if n30 > 0 then
        local amounts = call('HMGET', fa, unpack(call('ZRANGEBYSCORE', f, t - MONTH, t)))
        for i = 1, #amounts do total = total + (tonumber(amounts[i]) or 0) end
      end
      stats[nc + 2] = call('ZCOUNT', f, t - WEEK, t)
      stats[nc + 3] = n30
      stats[nc + 4] = total
      stats[nc + 5] = call('ZCOUNT', g, t - MONTH, t)
    else
      for i = nc + 2, nc + 5 do stats[i] = 0 end
    end
    out[#out + 1] = pack(STATS, unpack(stats))
    if write == 1 then
      local add = {1, 1, 1, 1, 0, 0, 0, amount}
      if not last or t - last > DAY then add[5] = 1 end
      if not last or t - last > WEEK then add[6] = 1 end
      if not last then add[7] = 1 end
      if dt >= 0 then
        for i = 1, nc do counters[i] = stats[i] + add[i] end
        updated = t
      else
        for i = 1, nc do counters[i] = counters[i] + add[i] * exp(dt / taus[i]) end
      end
      if not last or t > last then ncards = ncards + call('ZADD', c, t, card) end
      if ncards > cap + slack then
        call('ZREMRANGEBYRANK', c, 0, ncards - cap - 1)
        ncards = cap
      end
      dirty = true
    end
  end
  if dirty then
    keep_cards(c, st, ttl)
    st[1], st[2] = updated, ncards
    for i = 1, nc do st[3 + i] = counters[i] end
    call('SET', h, pack(STATE, unpack(st)), 'EX', ttl)
    if labelled then
      call('EXPIRE', f, ttl)
      call('EXPIRE', fa, ttl)
      call('EXPIRE', g, ttl)
    end
  end
end
return table.concat(out)
"""
)

# KEYS: the entity's base key. ARGV: tx member, known ms, fraud 0/1, amount, ttl, label cap.
# Returns 1 when the label changed something, 0 for a repeat.
_LABEL_LUA = (
    _STATE_LUA
    + """
local h = KEYS[1]
local c, f, fa, g = h .. ':c', h .. ':f', h .. ':fa', h .. ':g'
local tx, known_s, fraud, amount, ttl, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  tonumber(ARGV[5]), tonumber(ARGV[6])
local known = tonumber(known_s)
local MONTH = """
    + str(LABEL_WINDOW_MS)
    + """
local function trim(z, amounts)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. string.format('%.17g', known - MONTH))
  local n = redis.call('ZCARD', z) - #old
  if n > cap then
    for _, m in ipairs(redis.call('ZRANGE', z, #old, #old + n - cap - 1)) do old[#old + 1] = m end
  end
  if #old > 0 then
    redis.call('ZREM', z, unpack(old))
    if amounts then redis.call('HDEL', amounts, unpack(old)) end
  end
end
if fraud == '1' then
  if redis.call('ZSCORE', f, tx) then return 0 end
  redis.call('ZREM', g, tx)
  redis.call('ZADD', f, known_s, tx)
  redis.call('HSET', fa, tx, amount)
  trim(f, fa)
else
  if redis.call('ZSCORE', g, tx) then return 0 end
  redis.call('ZREM', f, tx)
  redis.call('HDEL', fa, tx)
  redis.call('ZADD', g, known_s, tx)
  trim(g, nil)
end
-- the state's "labels held" (a double at byte 17) tells observe whether to look
local held = redis.call('ZCARD', f) + redis.call('ZCARD', g)
local blob = redis.call('GET', h)
local st = load_state(blob, c)
st[3] = held
keep_cards(c, st, ttl)
redis.call('SET', h, struct.pack(STATE, unpack(st)), 'EX', ttl)
for _, k in ipairs({f, fa, g}) do redis.call('EXPIRE', k, ttl) end
return 1
"""
)


@dataclass(frozen=True)
class EntityLabel:
    """A label as the profiles take it: which entities, which transaction, when known."""

    merchant: int  # entity hashes; 0 = none
    device: int
    tx: int
    known_ms: int
    fraud: bool
    amount: float


@dataclass(frozen=True)
class ObservationPlan:
    """A batch's events grouped by entity: ``rows`` (event indices) kind by kind, entity by
    entity, each entity's events in (ts, tx) order; ``entities`` [(kind, entity hash)] and
    ``counts`` (events per entity) in the same order. Rows without an id are left out —
    their statistics stay zero."""

    rows: np.ndarray
    kinds: np.ndarray  # kind index per row
    entities: list[tuple[str, int]]
    counts: np.ndarray


def observation_plan(records: np.ndarray) -> ObservationPlan:
    """Group ``records`` by (kind, entity), time-ordered inside each group (vectorized)."""
    order = np.lexsort((records["tx"], records["ts"]))
    rows, kinds, ids = [], [], []
    for k, kind in enumerate(ENTITY_KINDS):
        col = records[kind][order]
        known = col != 0
        rows.append(order[known])
        ids.append(col[known])
        kinds.append(np.full(int(known.sum()), k, dtype=np.int64))
    row, kind_of, ent = np.concatenate(rows), np.concatenate(kinds), np.concatenate(ids)
    if not row.size:  # no event of the batch carries an id
        return ObservationPlan(row, kind_of, [], np.zeros(0, dtype=np.int64))
    group = np.lexsort((np.arange(row.size), ent, kind_of))  # stable: time order kept
    row, kind_of, ent = row[group], kind_of[group], ent[group]
    starts = np.flatnonzero(np.r_[True, (ent[1:] != ent[:-1]) | (kind_of[1:] != kind_of[:-1])])
    counts = np.diff(np.r_[starts, row.size])
    entities = [
        (ENTITY_KINDS[int(k)], int(e))
        for k, e in zip(kind_of[starts].tolist(), ent[starts].tolist(), strict=True)
    ]
    return ObservationPlan(row, kind_of, entities, counts)


class EntityStore(Protocol):
    """Merchant and device profiles (``features.entity_profile``)."""

    async def observe(
        self, records: np.ndarray, cards: np.ndarray, write: np.ndarray
    ) -> np.ndarray:
        """Statistics [B, kinds, N_STATS] before each event; rows with ``write`` are added."""
        ...

    async def label(self, label: EntityLabel) -> int:
        """Apply a label to its merchant and device; how many profiles it changed."""
        ...


class InMemoryEntityStore:
    """``EntityProfiles`` behind the store interface: tests, dry-run tools, the reference."""

    def __init__(self, config: EntityProfileConfig | None = None) -> None:
        self.profiles = EntityProfiles(config)

    async def observe(
        self, records: np.ndarray, cards: np.ndarray, write: np.ndarray
    ) -> np.ndarray:
        out = np.zeros((records.size, len(ENTITY_KINDS), N_STATS))
        plan = observation_plan(records)
        at = 0
        for (kind, entity), n in zip(plan.entities, plan.counts.tolist(), strict=True):
            k = ENTITY_KINDS.index(kind)
            for r in plan.rows[at : at + n].tolist():
                out[r, k] = self.profiles.observe(
                    kind,
                    entity,
                    int(records["ts"][r]),
                    card_member(int(cards[r])),
                    float(records["amount"][r]),
                    bool(write[r]),
                )
            at += n
        return out

    async def label(self, label: EntityLabel) -> int:
        changed = 0
        for kind, entity in (("merchant", label.merchant), ("device", label.device)):
            if entity:
                changed += self.profiles.label(
                    kind, entity, card_member(label.tx), label.known_ms, label.fraud, label.amount
                )
        return changed


class RedisEntityStore:
    """The production store: the two scripts above, retried like every Redis call."""

    def __init__(
        self,
        client: RedisClient,
        key_prefix: str = "riskstream:",
        config: EntityProfileConfig | None = None,
        cluster_mode: bool = False,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.config = config or EntityProfileConfig()
        self.cluster_mode = cluster_mode
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self._observe = LuaScript(client, _OBSERVE_LUA, check_keys=False)  # reads first
        self._label = LuaScript(client, _LABEL_LUA)

    def key(self, kind: str, entity: int) -> str:
        """The entity's base key, hash-tagged on the entity (its other keys add a suffix)."""
        return f"{self.key_prefix}ent:{{{_KIND_TAG[kind]}:{entity:016x}}}"

    def keys(self, kind: str, entity: int) -> list[str]:
        """All of the entity's keys: state, cards, frauds, fraud amounts, legit."""
        base = self.key(kind, entity)
        return [base + s for s in ("", ":c", ":f", ":fa", ":g")]

    async def observe(
        self, records: np.ndarray, cards: np.ndarray, write: np.ndarray
    ) -> np.ndarray:
        out = np.zeros((records.size, len(ENTITY_KINDS), N_STATS))
        plan = observation_plan(records)
        if not plan.entities:
            return out
        cfg = self.config
        events = np.zeros(plan.rows.size, dtype=EVENT_DTYPE)
        events["t"] = records["ts"][plan.rows]
        events["card"] = cards[plan.rows]
        events["amount"] = records["amount"][plan.rows]
        events["write"] = write[plan.rows]
        keys = [self.key(kind, entity) for kind, entity in plan.entities]
        counts = plan.counts.astype("<u4")
        head: list[Any] = [cfg.ttl_s, cfg.card_cap, cfg.card_slack]
        bounds = np.r_[0, np.cumsum(plan.counts)]
        entity_of = np.repeat(np.arange(len(keys)), plan.counts)

        def build(idx: list[int]) -> tuple[list[str], list[Any]]:
            mine = item_rows(idx, bounds, entity_of)
            return [keys[i] for i in idx], [
                *head,
                counts[idx].tobytes(),
                events[mine].tobytes(),
            ]

        replies = await self._observe.run_grouped(
            keys, build, self.cluster_mode, self.retry_attempts, self.retry_backoff_s
        )
        for idx, reply in replies:
            mine = item_rows(idx, bounds, entity_of)
            values = np.frombuffer(reply, dtype="<f8").reshape(-1, N_STATS)
            out[plan.rows[mine], plan.kinds[mine]] = values
        return out

    async def label(self, label: EntityLabel) -> int:
        calls = []
        for kind, entity in (("merchant", label.merchant), ("device", label.device)):
            if entity:
                args = [
                    card_member(label.tx),
                    int(label.known_ms),
                    "1" if label.fraud else "0",
                    repr(float(label.amount)),
                    self.config.ttl_s,
                    self.config.label_cap,
                ]
                calls.append(([self.key(kind, entity)], args))
        replies = await self._label.run(calls, self.retry_attempts, self.retry_backoff_s)
        return int(sum(int(r) for r in replies))
