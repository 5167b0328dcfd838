"""Entity inputs for training: labels only from when they arrive, no look-ahead, absent ids."""

from __future__ import annotations

import numpy as np
import pytest

from features.entity_profile import (
    DAY_MS,
    ENTITY_FEATURES,
    ENTITY_KINDS,
    STATS,
    entity_presence,
    features_from_stats,
)
from features.entity_replay import replay_entity_stats
from features.events import hash_ids, records_from_table
from features.label_delay import MAX_DISPUTE_MS, LabelDelay, LabelDelayError
from streams.devtools.simulator import SimulatorConfig, simulate

S = {name: i for i, name in enumerate(STATS)}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = simulate(SimulatorConfig(users=120, days=30, seed=5, fraud_rate=0.03))
    rec = records_from_table(table)
    cards = hash_ids(table.column("user_id").to_pylist())
    labels = table.column("is_fraud").to_numpy().astype(np.int8)
    return rec, cards, labels


def test_label_delay_parses_and_is_deterministic() -> None:
    assert LabelDelay.parse("7d").fixed_ms == 7 * DAY_MS
    assert LabelDelay.parse("90m").fixed_ms == 90 * 60_000
    assert LabelDelay.parse("mix:0.5").analyst_share == 0.5
    for bad in ("soon", "7 weeks", "mix:2", "-1d"):
        with pytest.raises(LabelDelayError):
            LabelDelay.parse(bad)
    tx = hash_ids(f"tx{i}" for i in range(20_000))
    mix = LabelDelay.parse("mix")
    d = mix.delays_ms(tx)
    assert np.array_equal(d, mix.delays_ms(tx))
    assert d.min() > 0 and d.max() <= MAX_DISPUTE_MS
    quick = d < DAY_MS  # analyst confirmations: hours; chargebacks: weeks
    assert abs(quick.mean() - mix.analyst_share) < 0.03
    assert 14 * DAY_MS < np.median(d[~quick]) < 28 * DAY_MS


def test_a_fraud_label_counts_only_once_it_has_arrived(data) -> None:
    rec, cards, labels = data
    delay = LabelDelay.parse("7d")
    stats = replay_entity_stats(rec, cards, labels, delay)
    fraud = np.flatnonzero(labels == 1)
    merchant = rec["merchant"]
    k = ENTITY_KINDS.index("merchant")
    checked = 0
    for i in np.flatnonzero(merchant != 0)[::7]:
        t = rec["ts"][i]
        same = fraud[merchant[fraud] == merchant[i]]
        known = rec["ts"][same] + delay.fixed_ms
        expect = int(((known <= t) & (known >= t - 7 * DAY_MS)).sum())
        assert stats[i, k, S["fraud_7d"]] == expect
        checked += expect > 0
    assert checked > 0  # some events did see confirmed fraud at their merchant


def test_no_look_ahead(data) -> None:
    """Changing the labels of events after time t leaves every entity statistic before
    t + the shortest delay unchanged (and the mix's shortest delay is > 0)."""
    rec, cards, labels = data
    ts = rec["ts"]
    t = int(np.quantile(ts, 0.5))
    flipped = labels.copy()
    later = ts > t
    flipped[later] = 1 - flipped[later]
    for delay in (LabelDelay.parse("2d"), LabelDelay.parse("mix")):
        a = replay_entity_stats(rec, cards, labels, delay)
        b = replay_entity_stats(rec, cards, flipped, delay)
        shortest = int(delay.delays_ms(rec["tx"][later]).min())
        before = ts < t + shortest
        assert np.array_equal(a[before], b[before])
        assert not np.array_equal(a, b)  # the flip did change later statistics


def test_absent_ids_are_a_valid_state(data) -> None:
    rec, cards, labels = data
    bare = rec.copy()
    bare["merchant"] = 0
    stats = replay_entity_stats(bare, cards, labels, LabelDelay())
    feats = features_from_stats(stats, entity_presence(bare), bare["amount"])
    assert feats.shape == (rec.size, len(ENTITY_FEATURES))
    m = [i for i, name in enumerate(ENTITY_FEATURES) if name.startswith("merchant_")]
    assert (feats[:, m] == 0).all()
    d = ENTITY_FEATURES.index("device_present")
    assert set(np.unique(feats[:, d])) == {0.0, 1.0}  # online events carry a device
    assert np.isfinite(feats).all()
