"""An in-process ``WorkerService`` on the session's embedded stack (real Kafka and Redis).

For tests that need two things at once inside one worker (a stream batch and an HTTP
request, a label and a scoring thread) with control over their timing, which a worker
subprocess does not give. Everything below the Faust agent is the production code.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from features.contracts import Transaction
from streams.devtools.embedded import EmbeddedStack
from streams.devtools.simulator import SimulatorConfig, simulate
from streams.pipeline import RawMessage
from streams.service import WorkerService
from streams.settings import Settings


def service_settings(stack: EmbeddedStack, tmp: Path, **overrides: Any) -> Settings:
    name = f"s{uuid.uuid4().hex[:8]}"
    topics = {k: f"{name}-{k}" for k in ("transactions", "scores", "alerts", "dlq", "feedback")}
    stack.create_topics(list(topics.values()), partitions=2)
    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": stack.bootstrap_servers},
        "redis": {"url": stack.redis_url, "retry_attempts": 3, "retry_backoff_s": 0.05},
        "topics": {**topics, "partitions": 2},
        "sequence": {"key_prefix": f"{name}:"},
        "http": {"port": 0},
        "data_dir": str(tmp / name),
        "app_id": name,
    }
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Settings.model_validate(data)


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[WorkerService]:
    svc = WorkerService(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def transactions(users: int = 12, days: int = 12, seed: int = 5) -> list[Transaction]:
    rows = simulate(SimulatorConfig(users=users, days=days, seed=seed)).to_pylist()
    out = []
    for r in rows:
        r.pop("is_fraud"), r.pop("scenario")
        out.append(Transaction.model_validate({k: v for k, v in r.items() if v is not None}))
    return out


def raw(
    txs: list[Transaction], topic: str = "transactions", first_offset: int = 0
) -> list[RawMessage]:
    now = time.monotonic()
    return [
        RawMessage(t.model_dump_json().encode(), topic, 0, first_offset + i, now)
        for i, t in enumerate(txs)
    ]


def body(txs: list[Transaction], dry_run: bool = False) -> bytes:
    items = [json.loads(t.model_dump_json()) for t in txs]
    return json.dumps({"transactions": items, "dry_run": dry_run}).encode()


def by_user(txs: list[Transaction]) -> dict[str, list[Transaction]]:
    out: dict[str, list[Transaction]] = {}
    for t in txs:
        out.setdefault(t.user_id, []).append(t)
    return out


Factory = Callable[..., Settings]


async def score_in_batches(engine: Any, txs: list[Transaction], batch: int) -> list[float]:
    """Scores of ``txs`` through ``engine`` (a ``ScoringEngine``) in batches of ``batch``,
    each refreshing the cache before the next, as the worker does."""
    from scoring.decision import ScoreRequest

    scores = []
    for s in range(0, len(txs), batch):
        decisions, pending = await engine.score([ScoreRequest(t) for t in txs[s : s + batch]])
        await engine.refresh_cache(pending)
        scores.extend(d.score for d in decisions)
    return scores
