"""Per-user dynamic thresholds: the global threshold adapted to each user's own scores.

    personal  = mean_u + k · std_u               (Welford statistics of the user's scores)
    w         = n_u / (n_u + credibility_n)       (credibility grows with the user's events)
    threshold = clamp((1 − w) · global + w · personal, min_ratio · global, max_ratio · global)
                + 10 · global · adjust_u                (then within [lower, upper])

The band is relative to the global threshold: the global one is calibrated for the
target alert rate, and a calm user's tiny score variance must not pull their bar far
below it (without the band, calm users' bars sank and the alert rate rose several-fold).

Only scores *below* the threshold in force update the statistics, so an ongoing attack
cannot raise its own bar. Feedback moves ``adjust_u`` by ``feedback_step`` (a false
positive up, a confirmed fraud down); it counts in units of 10 × the global threshold,
so one step moves a user's bar by half the global threshold at the defaults. The
adjustment applies *after* the band: the band guards against statistics (a calm user's
tiny variance), not against an analyst's decision, so a confirmed fraud lowers even a
bar already at the floor (down to ``lower``).
State per user: the score statistics (n, mean, m2) belong to one model version (they
are statistics of that model's scores, so a new version is not judged against the old
one's history) in a small hash per (version, user); the analyst adjustment (adj) is a
decision about the card, in units of the global threshold, so it is shared by every
version in a hash per user. A batch reads both with one script call and writes back
with another. A pipeline of HMGET/HSET/EXPIRE per user spent more of
the worker's event loop in redis-py's command packing and reply parsing than the
sequence store did (profile in docs/BENCHMARKS.md); one call with all the users' keys
avoids it. On a Redis Cluster it is one call per node (``LuaScript.run_grouped``).

Statistics are kept only where they are used: when the policy in force for a version is
global (``per_user`` false, which is what training learns when per-user bars do not pay),
the Redis policy reads only the adjustment and writes nothing per event: reading and
rewriting statistics that no threshold depends on cost Redis work on every event and a
write script call per batch (docs/BENCHMARKS.md). An operator who later turns
``per_user`` on starts the statistics from zero, and the credibility weight ``w`` phases
them in as they grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scoring.state.redis_retry import LuaScript, RedisClient, run_pipeline

#: the policy parameters training may learn (``models.threshold_learning``)
LEARNED_FIELDS = ("per_user", "k", "credibility_n", "min_ratio", "max_ratio")


class ThresholdConfig(BaseModel):
    """Constants of the policy (documented in docs/MODEL.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_user: bool = Field(
        True,
        description="Adapt the threshold to each user's scores; false: the global threshold "
        "(plus analyst feedback) for everyone.",
    )
    learned: bool = Field(
        True,
        description="Use the per-user parameters the model learned on validation "
        "(thresholds.policy in model.json) where it has them, instead of these.",
    )
    k: float = Field(3.0, description="Standard deviations above the user's mean score.")
    credibility_n: float = Field(50.0, gt=0, description="Events at which w reaches 1/2.")
    min_ratio: float = Field(0.8, ge=0, description="Lowest threshold as a share of the global.")
    max_ratio: float = Field(10.0, ge=1, description="Highest threshold as a multiple of global.")
    lower: float = Field(0.001, ge=0, le=1, description="Absolute floor of any threshold.")
    upper: float = Field(0.99, ge=0, le=1, description="Absolute ceiling of any threshold.")
    feedback_step: float = Field(0.05, ge=0, le=1, description="Move per analyst label.")
    key_prefix: str | None = Field(
        None, description="Redis key prefix; unset = the sequence store's (one prefix per app)."
    )
    ttl_s: int = Field(90 * 86_400, ge=1, description="Idle users' state expires.")

    def with_learned(self, policy: dict[str, Any] | None) -> ThresholdConfig:
        """This config with a model's learned parameters (``learned`` and a policy given)."""
        if not self.learned or not policy:
            return self
        return self.model_copy(update={k: v for k, v in policy.items() if k in LEARNED_FIELDS})

    def resolved(self, default_prefix: str) -> ThresholdConfig:
        """This config with ``key_prefix`` set (``default_prefix`` when it was unset)."""
        if self.key_prefix is not None:
            return self
        return self.model_copy(update={"key_prefix": default_prefix})

    @property
    def prefix(self) -> str:
        """The key prefix in force (``riskstream:`` when none was resolved)."""
        return "riskstream:" if self.key_prefix is None else self.key_prefix


@dataclass
class UserStats:
    """Welford statistics of a user's normal scores plus the feedback adjustment."""

    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    adj: float = 0.0

    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n > 1 else 0.0

    def add(self, score: float) -> None:
        self.n += 1
        delta = score - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (score - self.mean)


def threshold_for(stats: UserStats, global_threshold: float, cfg: ThresholdConfig) -> float:
    """The policy's formula (pure)."""
    w = stats.n / (stats.n + cfg.credibility_n) if cfg.per_user else 0.0
    personal = stats.mean + cfg.k * stats.std()
    t = (1 - w) * global_threshold + w * personal
    t = min(max(t, cfg.min_ratio * global_threshold), cfg.max_ratio * global_threshold)
    t += stats.adj * global_threshold * 10
    return float(min(max(t, cfg.lower), cfg.upper))


class ThresholdPolicy(Protocol):
    """Thresholds for users, updated with their scores and with feedback.

    Per batch: ``read`` once, ``thresholds_for`` (pure), then ``update`` with the same
    stats, so the state is read once and written once.
    """

    async def read(self, users: Sequence[str]) -> dict[str, UserStats]: ...

    def thresholds_for(self, users: Sequence[str], stats: dict[str, UserStats]) -> np.ndarray: ...

    async def thresholds(self, users: Sequence[str]) -> np.ndarray: ...

    async def update(
        self,
        users: Sequence[str],
        scores: np.ndarray,
        thresholds: np.ndarray,
        stats: dict[str, UserStats] | None = None,
    ) -> None: ...

    async def feedback(self, user: str, label: str, transaction_id: str) -> float: ...

    def for_version(
        self, version: str, global_threshold: float, learned: dict[str, Any] | None = None
    ) -> ThresholdPolicy:
        """The same policy for another model version: its own score statistics and
        learned parameters (``learned``), the analyst adjustments shared with this one."""
        ...


class _Base:
    def __init__(
        self,
        global_threshold: float,
        config: ThresholdConfig | None = None,
        version: str = "",
        learned: dict[str, Any] | None = None,
    ) -> None:
        self.global_threshold = global_threshold
        #: the operator's settings; ``config`` is them with the model's learned parameters
        self.settings = config or ThresholdConfig()
        self.config = self.settings.with_learned(learned)
        self.version = version

    async def read(self, users: Sequence[str]) -> dict[str, UserStats]:
        raise NotImplementedError

    def thresholds_for(self, users: Sequence[str], stats: dict[str, UserStats]) -> np.ndarray:
        """The policy's threshold for each user from already-read statistics."""
        return np.array(
            [
                threshold_for(stats.get(u, UserStats()), self.global_threshold, self.config)
                for u in users
            ]
        )

    async def thresholds(self, users: Sequence[str]) -> np.ndarray:
        """Read and compute in one call (when the stats are not needed afterwards)."""
        return self.thresholds_for(users, await self.read(users))

    def _apply(
        self,
        stats: dict[str, UserStats],
        users: Sequence[str],
        scores: np.ndarray,
        thresholds: np.ndarray,
    ) -> set[str]:
        touched = set()
        for user, score, t in zip(users, scores, thresholds, strict=True):
            if score < t:  # alerts do not raise their own bar
                stats.setdefault(user, UserStats()).add(float(score))
                touched.add(user)
        return touched

    def _adjust(self, st: UserStats, label: str, previous: str | None) -> None:
        """Move the user's adjustment once per labelled transaction.

        The same label again (a replayed message, a double click) changes nothing; a
        changed label (an analyst's correction) undoes the earlier move first.
        """
        if previous == label:
            return
        step = self.config.feedback_step
        moves = 1 if previous is None else 2
        delta = (step if label == "legit" else -step) * moves
        st.adj = float(np.clip(st.adj + delta, -0.5, 0.5))


class InMemoryThresholdPolicy(_Base):
    """Same policy, state in dicts (evaluation, tests)."""

    def __init__(
        self,
        global_threshold: float,
        config: ThresholdConfig | None = None,
        version: str = "",
        shared: tuple[dict[str, float], dict[tuple[str, str], str]] | None = None,
        learned: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(global_threshold, config, version, learned)
        self.stats: dict[str, UserStats] = {}
        # the analyst adjustments and the labels behind them, shared across versions
        self.adjustments, self.labels = shared if shared is not None else ({}, {})

    def for_version(
        self, version: str, global_threshold: float, learned: dict[str, Any] | None = None
    ) -> InMemoryThresholdPolicy:
        return InMemoryThresholdPolicy(
            global_threshold, self.settings, version, (self.adjustments, self.labels), learned
        )

    async def read(self, users: Sequence[str]) -> dict[str, UserStats]:
        for u in users:  # the live state: updates go straight into it
            st = self.stats.setdefault(u, UserStats())
            st.adj = self.adjustments.get(u, 0.0)
        return self.stats

    async def update(
        self,
        users: Sequence[str],
        scores: np.ndarray,
        thresholds: np.ndarray,
        stats: dict[str, UserStats] | None = None,
    ) -> None:
        self._apply(self.stats, users, scores, thresholds)

    async def feedback(self, user: str, label: str, transaction_id: str) -> float:
        st = (await self.read([user]))[user]
        previous = self.labels.get((user, transaction_id))
        self.labels[(user, transaction_id)] = label
        self._adjust(st, label, previous)
        self.adjustments[user] = st.adj
        return threshold_for(st, self.global_threshold, self.config)


# KEYS: per user, the version's statistics hash then the user's adjustment hash. Returns
# n, mean, m2, adj per user in one flat array (missing fields come back as nil).
_READ_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  local row = redis.call('HMGET', KEYS[i], 'n', 'mean', 'm2')
  local base = (i - 1) * 2
  out[base + 1], out[base + 2], out[base + 3] = row[1], row[2], row[3]
  out[base + 4] = redis.call('HGET', KEYS[i + 1], 'adj')
end
return out
"""

# KEYS: the users' adjustment hashes. Returns each one's adj (nil when missing).
_READ_ADJ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'adj')
end
return out
"""

# KEYS: one hash per user; ARGV: TTL in seconds, the number of fields m, the m field
# names, then m values per key. Only the named fields are written: a batch writes the
# score statistics, feedback writes the adjustment, and neither overwrites the other's
# field with a value it read before the other wrote.
_WRITE_LUA = """
local ttl, m = ARGV[1], tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local base = 2 + m + (i - 1) * m
  local kv = {}
  for j = 1, m do
    kv[2 * j - 1], kv[2 * j] = ARGV[2 + j], ARGV[base + j]
  end
  redis.call('HSET', key, unpack(kv))
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""


class RedisThresholdPolicy(_Base):
    """Production policy: hashes per (version, user) and per user, hash-tagged like the
    sequence keys (both of a user's keys share its slot)."""

    FIELDS = ("n", "mean", "m2", "adj")

    def __init__(
        self,
        client: RedisClient,
        global_threshold: float,
        config: ThresholdConfig | None = None,
        retry_attempts: int = 5,
        retry_backoff_s: float = 0.2,
        cluster_mode: bool = False,
        version: str = "",
        learned: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(global_threshold, config, version, learned)
        self.client = client
        self.retry_attempts, self.retry_backoff_s = retry_attempts, retry_backoff_s
        self.cluster_mode = cluster_mode
        self._read_script = LuaScript(client, _READ_LUA, check_keys=False)  # reads only
        self._read_adj_script = LuaScript(client, _READ_ADJ_LUA, check_keys=False)  # reads only
        self._write_script = LuaScript(client, _WRITE_LUA, check_keys=False)  # sets values

    def for_version(
        self, version: str, global_threshold: float, learned: dict[str, Any] | None = None
    ) -> RedisThresholdPolicy:
        return RedisThresholdPolicy(
            self.client,
            global_threshold,
            self.settings,
            self.retry_attempts,
            self.retry_backoff_s,
            self.cluster_mode,
            version,
            learned,
        )

    def key(self, user: str) -> str:
        """The version's score statistics of ``user``."""
        return f"{self.config.prefix}thr:{self.version}:{{{user}}}"

    def adjustment_key(self, user: str) -> str:
        """The analyst adjustment of ``user``, shared by every model version."""
        return f"{self.config.prefix}thr:{{{user}}}"

    async def read(self, users: Sequence[str]) -> dict[str, UserStats]:
        uniq = list(dict.fromkeys(users))
        if not uniq:
            return {}
        if not self.config.per_user:  # a global policy keeps no statistics (module doc)
            return await self._read_adjustments(uniq)
        routing = [self.key(u) for u in uniq]

        def build(idx: list[int]) -> tuple[list[str], tuple[()]]:
            return [k for i in idx for k in (routing[i], self.adjustment_key(uniq[i]))], ()

        replies = await self._read_script.run_grouped(
            routing, build, self.cluster_mode, self.retry_attempts, self.retry_backoff_s
        )
        m = len(self.FIELDS)
        flat: list[float] = [0.0] * (m * len(uniq))
        for idx, reply in replies:
            for j, i in enumerate(idx):
                flat[m * i : m * (i + 1)] = [
                    float(v) if v is not None else 0.0 for v in reply[m * j : m * (j + 1)]
                ]
        return {u: UserStats(*flat[m * i : m * (i + 1)]) for i, u in enumerate(uniq)}

    async def _read_adjustments(self, uniq: list[str]) -> dict[str, UserStats]:
        """Only the analyst adjustments of ``uniq`` (distinct users), as statistics."""
        keys = [self.adjustment_key(u) for u in uniq]

        def build(idx: list[int]) -> tuple[list[str], tuple[()]]:
            return [keys[i] for i in idx], ()

        replies = await self._read_adj_script.run_grouped(
            keys, build, self.cluster_mode, self.retry_attempts, self.retry_backoff_s
        )
        out = {}
        for idx, reply in replies:
            for i, adj in zip(idx, reply, strict=True):
                out[uniq[i]] = UserStats(adj=float(adj) if adj is not None else 0.0)
        return out

    async def update(
        self,
        users: Sequence[str],
        scores: np.ndarray,
        thresholds: np.ndarray,
        stats: dict[str, UserStats] | None = None,
    ) -> None:
        """Apply scores to ``stats`` (read again only if not given) and write them back;
        nothing under a global policy, which keeps no statistics (module doc)."""
        if not self.config.per_user:
            return
        if stats is None:
            stats = await self.read(users)
        touched = self._apply(stats, users, scores, thresholds)
        await self._write({u: stats[u] for u in touched}, ("n", "mean", "m2"), self.key)

    async def _write(
        self, stats: dict[str, UserStats], fields: tuple[str, ...], key: Callable[[str], str]
    ) -> None:
        if not stats:
            return
        keys = [key(u) for u in stats]
        m = len(fields)
        # repr() round-trips a float exactly, as redis-py's own encoding would
        values = [repr(float(getattr(st, f))) for st in stats.values() for f in fields]

        def build(idx: list[int]) -> tuple[list[str], list[Any]]:
            mine = [v for i in idx for v in values[m * i : m * (i + 1)]]
            return [keys[i] for i in idx], [self.config.ttl_s, m, *fields, *mine]

        await self._write_script.run_grouped(
            keys, build, self.cluster_mode, self.retry_attempts, self.retry_backoff_s
        )

    def label_key(self, user: str, transaction_id: str) -> str:
        return f"{self.config.prefix}label:{{{user}}}:{transaction_id}"

    async def feedback(self, user: str, label: str, transaction_id: str) -> float:
        """Record the label (``SET … GET``: the previous one comes back) and apply it.

        Feedback is keyed by user on its topic, so one worker applies a user's labels
        in order; the read-modify-write below does not race with itself.
        """
        key = self.label_key(user, transaction_id)

        async def mark(pipe: Any) -> None:
            pipe.set(key, label, ex=self.config.ttl_s, get=True)

        (previous,) = await run_pipeline(
            self.client, mark, self.retry_attempts, self.retry_backoff_s
        )
        prev = previous.decode() if isinstance(previous, bytes) else previous
        st = (await self.read([user]))[user]
        if prev != label:
            self._adjust(st, label, prev)
            await self._write({user: st}, ("adj",), self.adjustment_key)
        return threshold_for(st, self.global_threshold, self.config)
