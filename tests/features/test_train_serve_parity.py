"""The features serving computes from Redis equal the features training computes from a file."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from features.events import records_from_table, sort_key
from features.featurize import (
    N_NUMERIC,
    featurize_windows,
    fit_spec,
    step_features,
    windows_from_sorted,
)
from features.serving_windows import windows_for_batch
from scoring.state.sequence_config import SequenceStoreConfig
from scoring.state.sequence_store import RedisSequenceStore
from streams.devtools.simulator import SimulatorConfig, simulate

pytestmark = pytest.mark.integration


async def test_serving_features_from_redis_equal_training_features(stack, unique_name) -> None:
    table = simulate(SimulatorConfig(users=120, days=40, seed=21))
    rec = records_from_table(table)
    users = np.array(table.column("user_id").to_pylist())
    order = np.lexsort((rec["tx"], rec["ts"], users))
    rs, codes = rec[order], np.unique(users[order], return_inverse=True)[1]
    spec = fit_spec(rs, codes, np.arange(0, rs.size, 2), max_history=64)
    train = featurize_windows(
        windows_from_sorted(rs, codes, np.arange(rs.size), spec), spec, pad_to=64
    )
    pos = {int(t): k for k, t in enumerate(rs["tx"])}

    client = aioredis.Redis.from_url(stack.redis_url)
    store = RedisSequenceStore(
        client, SequenceStoreConfig(key_prefix=unique_name("par") + ":", max_length=64)
    )
    compared = 0
    try:
        tord = sort_key(rec)
        for start in range(0, tord.size, 97):
            ids = tord[start : start + 97]
            batch, bu = rec[ids], [str(users[i]) for i in ids]
            prior = await store.append_and_read(bu, batch)
            fb = featurize_windows(
                windows_for_batch(prior, bu, batch, spec),
                spec,
                pad_to=64,
            )
            k = np.array([pos[int(t)] for t in batch["tx"]])
            assert np.array_equal(fb.hist_len, train.hist_len[k])
            np.testing.assert_allclose(fb.cur_num, train.cur_num[k], atol=1e-6)
            np.testing.assert_allclose(fb.hist_num, train.hist_num[k], atol=1e-6)
            assert np.array_equal(fb.hist_mcc, train.hist_mcc[k])
            assert np.array_equal(fb.hist_pad, train.hist_pad[k])
            compared += len(ids)
    finally:
        await client.aclose()
    assert compared == rs.size
    assert train.hist_len.max() == 64  # the length cap was exercised
    assert (train.hist_len == 0).any()  # and brand-new users


def test_no_look_ahead() -> None:
    """Changing a later event never changes an earlier event's features."""
    table = simulate(SimulatorConfig(users=30, days=20, seed=2))
    rec = records_from_table(table)
    users = np.array(table.column("user_id").to_pylist())
    order = np.lexsort((rec["tx"], rec["ts"], users))
    rs, codes = rec[order], np.unique(users[order], return_inverse=True)[1]
    spec = fit_spec(rs, codes, np.arange(rs.size))
    idx = np.arange(rs.size)
    before = step_features(windows_from_sorted(rs, codes, idx, spec))
    tampered = rs.copy()
    last_of_user = np.r_[np.flatnonzero(np.diff(codes)), rs.size - 1]
    tampered["amount"][last_of_user] *= 1000
    tampered["merchant"][last_of_user] += 1
    after = step_features(windows_from_sorted(tampered, codes, idx, spec))
    others = np.setdiff1d(idx, last_of_user)
    np.testing.assert_array_equal(before[others], after[others])
    assert before.shape[-1] == N_NUMERIC
