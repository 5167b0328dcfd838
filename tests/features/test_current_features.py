"""The current event's inputs computed alone equal the current rows of the full
featurization (the incremental serving path uses them; training uses the full one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from features.current_features import current_features
from features.events import RECORD_DTYPE, records_from_table
from features.featurize import Windows, featurize_windows, fit_spec, windows_from_sorted
from features.tree_inputs import tree_inputs
from streams.devtools.simulator import SimulatorConfig, simulate

_DAY = 86_400_000


def _assert_same(win: Windows, spec, entity=None) -> None:
    for kind in ("match", "window"):  # today's aggregates, and older artifacts'
        _assert_same_kind(win, dataclasses.replace(spec, tree_aggregates=kind), entity)


def _assert_same_kind(win: Windows, spec, entity=None) -> None:
    full = featurize_windows(win, spec, entity=entity)
    cur = current_features(win, spec, entity=entity, with_aggregates=True)
    # the tree's inputs, aggregates included, bit for bit (a split must not flip)
    assert np.array_equal(tree_inputs(cur, spec), tree_inputs(full, spec))
    np.testing.assert_allclose(cur.cur_raw, full.cur_raw, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cur.cur_num, full.cur_num, rtol=0, atol=1e-6)
    assert np.array_equal(cur.cur_mcc, full.cur_mcc)
    assert np.array_equal(cur.cur_channel, full.cur_channel)
    assert np.array_equal(cur.hist_len, full.hist_len)
    assert cur.hist_num.shape == (len(win.hist_len), 0, full.hist_num.shape[2])
    if full.cur_entity is not None:
        np.testing.assert_array_equal(cur.cur_entity, full.cur_entity)
    # without a tree the features compare fewer ids (``CurrentView.ids``): same values
    plain = current_features(win, spec, entity=entity)
    assert plain.aggregates is None
    assert np.array_equal(plain.cur_raw, cur.cur_raw)
    assert np.array_equal(plain.cur_num, cur.cur_num)


def _simulated() -> tuple[np.ndarray, np.ndarray]:
    table = simulate(SimulatorConfig(users=80, days=20, seed=5))
    rec = records_from_table(table)
    users = np.array(table.column("user_id").to_pylist())
    order = np.lexsort((rec["tx"], rec["ts"], users))
    return rec[order], np.unique(users[order], return_inverse=True)[1]


def test_current_features_equal_full_featurization_on_simulated_windows() -> None:
    rs, codes = _simulated()
    spec = fit_spec(rs, codes, np.arange(0, rs.size, 3), max_history=64)
    for index in (np.arange(rs.size), np.arange(0, rs.size, 7)[::-1]):
        _assert_same(windows_from_sorted(rs, codes, index, spec), spec)


def test_current_features_handle_the_awkward_cases() -> None:
    """Ties in time, unknown countries, missing coordinates, repeated and absent
    merchants/devices, empty histories and events at the edge of the velocity spans."""
    rng = np.random.default_rng(3)
    b, width = 60, 24
    recs = np.zeros((b, width), dtype=RECORD_DTYPE)
    t0 = 1_767_225_600_000
    gaps = rng.choice([0, 1, 59_000, 3_600_000, 3_600_001, _DAY, 7 * _DAY], (b, width))
    recs["ts"] = t0 + np.cumsum(gaps, axis=1)
    recs["tx"] = rng.integers(1, 2**62, (b, width)).astype(np.uint64)
    recs["amount"] = rng.choice([0.0, -5.0, 12.5, 990.0], (b, width))
    recs["country"] = rng.choice([0, 0, 250, 276], (b, width))
    recs["merchant"] = rng.choice([0, 11, 12, 13], (b, width))
    recs["device"] = rng.choice([0, 21, 22], (b, width))
    recs["mcc"] = rng.choice([5411, 5812, 7995], (b, width))
    recs["channel"] = rng.integers(0, 3, (b, width))
    lat = rng.uniform(-60, 60, (b, width)).astype(np.float32)
    lat[rng.random((b, width)) < 0.3] = np.nan
    recs["lat"], recs["lon"] = lat, rng.uniform(-170, 170, (b, width)).astype(np.float32)
    hist_len = rng.integers(0, width, b)
    hist_len[:3] = [0, 1, width - 1]
    flat = recs.reshape(-1)
    codes = np.repeat(np.arange(b), width)
    spec = fit_spec(flat, codes, np.arange(flat.size), min_mcc_count=1, max_history=width)
    _assert_same(Windows(recs, hist_len), spec)


def test_the_spec_normalization_arrays_are_its_values_and_read_only() -> None:
    """Built once per spec and shared by every batch: a caller writing into one would
    change every later batch's features."""
    rs, codes = _simulated()
    spec = fit_spec(rs, codes, np.arange(rs.size), max_history=64)
    for name in ("mean", "std", "entity_mean", "entity_std"):
        arr = getattr(spec, f"{name}_array")
        assert arr.dtype == np.float64
        assert arr.tolist() == list(getattr(spec, name))
        with pytest.raises(ValueError):
            arr[0] = 1.0
