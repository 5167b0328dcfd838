"""Train/serve parity of entity profiles through a real worker.

A labelled file is replayed through the worker (real Kafka, real Redis) with each fraud
label published on ``feedback`` at the time it would have reached the bank; every
decision's merchant and device statistics must equal what the trainer's replay
(``features.entity_replay``) computed for that event.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from features.entity_profile import ENTITY_KINDS, STATS, card_member
from features.entity_replay import replay_entity_stats
from features.events import hash_ids, records_from_table
from features.label_delay import LabelDelay
from streams.devtools.simulator import SimulatorConfig, simulate
from tests.worker_helpers import WorkerEnv, tx_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_worker_entity_statistics_equal_the_trainers(stack, tmp_path: Path) -> None:
    # one partition: the worker sees the events in the trainer's order (with several,
    # the order across partitions, hence across cards at one merchant, is the broker's)
    wenv = WorkerEnv(stack, tmp_path, f"p{uuid.uuid4().hex[:8]}")
    stack.create_topics(list(wenv.topics.values()), partitions=1)
    table = simulate(SimulatorConfig(users=60, days=21, seed=13, fraud_rate=0.01))
    rows = table.to_pylist()
    rec = records_from_table(table)
    cards = hash_ids(table.column("user_id").to_pylist())
    labels = table.column("is_fraud").to_numpy().astype(np.int8)
    delay = LabelDelay.parse("mix:0.6")
    expected = replay_entity_stats(rec, cards, labels, delay)

    order = np.lexsort((rec["tx"], rec["ts"]))  # the trainer's order, published as is
    fraud = np.flatnonzero((labels == 1) & ((rec["merchant"] != 0) | (rec["device"] != 0)))
    known = rec["ts"][fraud] + delay.delays_ms(rec["tx"][fraud])
    inside = known <= rec["ts"].max()
    fraud, known = fraud[inside], known[inside]
    fraud, known = fraud[np.argsort(known, kind="stable")], np.sort(known, kind="stable")
    assert fraud.size >= 3  # labels that arrive within the file

    def payload(i: int) -> tuple[str, bytes]:
        row = {k: v for k, v in rows[i].items() if v is not None}
        row.pop("is_fraud"), row.pop("scenario", None)
        return row["user_id"], json.dumps(row).encode()

    client = redis.Redis.from_url(stack.redis_url)
    worker = wenv.start(extra_env={"RISKSTREAM_TOPICS__PARTITIONS": "1"})
    sent = 0
    try:
        ts_sorted = rec["ts"][order]
        for j, at in zip(fraud.tolist(), known.tolist(), strict=True):
            upto = int(np.searchsorted(ts_sorted, at, side="left"))  # events before `at`
            if upto > sent:
                wenv.produce([payload(int(i)) for i in order[sent:upto]])
                sent = upto
                wenv.read("scores", expected=sent, key_of=tx_id_of, timeout_s=120)
            kind = "merchant" if rec["merchant"][j] else "device"
            tag = {"merchant": "m", "device": "d"}[kind]
            key = f"{wenv.name}:ent:{{{tag}:{int(rec[kind][j]):016x}}}:f"
            member = card_member(int(rec["tx"][j]))
            fb = {
                "transaction_id": rows[j]["transaction_id"],
                "user_id": rows[j]["user_id"],
                "label": "fraud",
                "at": int(at),
                "source": "chargeback",
            }
            wenv.produce([(rows[j]["user_id"], json.dumps(fb).encode())], wenv.topics["feedback"])
            deadline = time.monotonic() + 30
            while client.zscore(key, member) is None:  # the label is in the profile
                assert time.monotonic() < deadline, "feedback was not applied"
                time.sleep(0.05)
        wenv.produce([payload(int(i)) for i in order[sent:]])
        scores = wenv.read("scores", expected=rec.size, key_of=tx_id_of, timeout_s=120)
    finally:
        client.close()
        assert worker.stop() == 0

    row_of = {r["transaction_id"]: i for i, r in enumerate(rows)}
    compared = with_fraud = 0
    for m in scores:
        d = json.loads(m.value())
        i = row_of[d["transaction_id"]]
        entity = d["entity"]
        for k, kind in enumerate(ENTITY_KINDS):
            if rec[kind][i] == 0:
                assert kind not in entity
                continue
            got = np.array([entity[kind][name] for name in STATS])
            np.testing.assert_allclose(got, expected[i, k], rtol=1e-9, atol=1e-9)
            with_fraud += got[STATS.index("fraud_30d")] > 0
        compared += 1
    assert compared == rec.size
    assert with_fraud > 0  # delayed labels did reach later decisions
