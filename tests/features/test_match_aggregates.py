"""The tree's "match" aggregates: their values, their independence from how a batch is
padded, and which artifacts get them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from features.current_view import FIRST_SEEN_IDS, CurrentView
from features.events import RECORD_DTYPE
from features.featurize import FeatureSpec, Windows, featurize_windows
from features.match_aggregates import MATCH_AGGREGATES, ONLINE_CHANNEL, match_aggregates
from features.tree_inputs import AGGREGATES, tree_inputs, tree_width


def _windows(seed: int, b: int = 40, width: int = 20) -> Windows:
    rng = np.random.default_rng(seed)
    recs = np.zeros((b, width), dtype=RECORD_DTYPE)
    recs["ts"] = 1_767_225_600_000 + np.cumsum(rng.integers(1, 10**7, (b, width)), axis=1)
    recs["amount"] = rng.choice([0.0, -3.0, 9.99, 120.0, 4_000.0], (b, width))
    recs["merchant"] = rng.choice([0, 11, 12], (b, width))
    recs["device"] = rng.choice([0, 21, 22], (b, width))
    recs["country"] = rng.choice([0, 250, 276], (b, width))
    recs["mcc"] = rng.choice([5411, 5812], (b, width))
    recs["channel"] = rng.integers(0, 4, (b, width))
    hist_len = rng.integers(0, width, b)
    hist_len[:3] = [0, 1, width - 1]
    return Windows(recs, hist_len)


def _reference(row: np.ndarray, n: int) -> list[float]:
    """One row, the slow obvious way."""
    hist, cur = row[:n], row[n]
    la = [math.log1p(max(float(a), 0.0)) for a in hist["amount"]]
    d = max(n, 1)
    mean = sum(la) / d
    std = math.sqrt(sum((x - mean) ** 2 for x in la) / d)

    def share(field: str) -> float:
        if cur[field] == 0:
            return 0.0
        return sum(1 for v in hist[field] if v == cur[field]) / d

    cur_la = math.log1p(max(float(cur["amount"]), 0.0))
    return [
        math.log1p(n),
        mean,
        std,
        max(la) if n else 0.0,
        share("merchant"),
        share("device"),
        sum(1 for c in hist["channel"] if c == ONLINE_CHANNEL) / d,
        share("country"),
        (cur_la - mean) / max(std, 0.1) if n > 1 else 0.0,
        share("mcc"),
    ]


def test_match_aggregates_equal_a_row_by_row_reference() -> None:
    win = _windows(1)
    got = match_aggregates(CurrentView.of(win.records, win.hist_len))
    assert got.shape == (len(win.hist_len), len(MATCH_AGGREGATES))
    for i, n in enumerate(win.hist_len):
        np.testing.assert_allclose(got[i], _reference(win.records[i], int(n)), rtol=1e-12)
    assert got[0].tolist() == [0.0] * 10  # no history: every aggregate 0


def test_a_rows_aggregates_do_not_depend_on_the_batch_it_is_padded_in() -> None:
    """Training featurizes an event in one batch, serving in another: the tree's float32
    inputs must be the same bit for bit, however wide the widest window pads the row."""
    win = _windows(2, b=30, width=12)
    wide = np.zeros((30, 70), dtype=RECORD_DTYPE)
    wide[:, :12] = win.records
    alone = match_aggregates(CurrentView.of(win.records, win.hist_len))
    padded = match_aggregates(CurrentView.of(wide, win.hist_len))
    assert np.array_equal(alone, padded)
    for i in range(0, 30, 7):
        n = win.hist_len[i : i + 1]
        one = match_aggregates(CurrentView.of(win.records[i : i + 1, : n[0] + 1], n))
        assert np.array_equal(one[0], alone[i])


def test_a_view_that_compares_fewer_ids_is_refused() -> None:
    win = _windows(4)
    with pytest.raises(ValueError, match="the aggregates compare"):
        match_aggregates(CurrentView.of(win.records, win.hist_len, FIRST_SEEN_IDS))


def test_the_spec_names_the_kind_and_older_specs_keep_theirs() -> None:
    spec = FeatureSpec.identity((5411, 5812))
    assert spec.tree_aggregates == "match"
    assert FeatureSpec.from_json(spec.to_json()).tree_aggregates == "match"
    old = spec.to_json()
    del old["tree_aggregates"]  # model.json of an artifact trained before the key existed
    assert FeatureSpec.from_json(old).tree_aggregates == "window"
    with pytest.raises(ValueError, match="tree aggregates"):
        dataclasses.replace(spec, tree_aggregates="other")
    assert len(MATCH_AGGREGATES) == len(AGGREGATES)  # one tree width for either kind
    assert tree_width(False) == 16 + 2 + len(MATCH_AGGREGATES)


def test_tree_inputs_carry_the_spec_kind() -> None:
    win = _windows(3)
    spec = FeatureSpec.identity((5411, 5812))
    batch = featurize_windows(win, spec)
    x = tree_inputs(batch, spec)
    agg = match_aggregates(CurrentView.of(win.records, win.hist_len)).astype(np.float32)
    assert np.array_equal(x[:, 18:28], agg)
    old = dataclasses.replace(spec, tree_aggregates="window")
    old_batch = featurize_windows(win, old)
    assert old_batch.aggregates is None  # computed by tree_inputs from the history arrays
    assert not np.array_equal(tree_inputs(old_batch, old)[:, 18:28], agg)
    with pytest.raises(ValueError, match="featurized with them"):
        tree_inputs(dataclasses.replace(batch, aggregates=None), spec)
