"""Length grouping: every row once, never truncated, no dearer than the coarse buckets,
and the encoder's answer does not depend on how a row was grouped."""

from __future__ import annotations

import numpy as np
import pytest

from features.featurize import FeatureBatch
from scoring.artifact import load_artifact
from scoring.length_groups import CALL_COST, ROW_COST, length_groups
from scoring.onnx_model import N_NUMERIC, OnnxRiskModel
from scoring.scorer import encode_bucketed
from tests.model_versions import WINDOW_ARTIFACT


def _cost(groups: list[tuple[int, np.ndarray]]) -> float:
    return sum(CALL_COST + rows.size * (ROW_COST + t) for t, rows in groups)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_groups_cover_each_row_once_and_beat_fixed_buckets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(0, 12, 90), rng.integers(12, 65, 30), [64] * 40])
    rng.shuffle(lengths)
    groups = length_groups(lengths)
    rows = np.concatenate([r for _, r in groups])
    assert sorted(rows.tolist()) == list(range(lengths.size))
    for t, r in groups:
        assert (np.maximum(lengths[r], 1) <= t).all()
        assert t == max(1, lengths[r].max())  # padded to its longest member, no further
    coarse = [
        (b, np.flatnonzero(np.select([lengths <= 16, lengths <= 32], [16, 32], 64) == b))
        for b in (16, 32, 64)
    ]
    coarse = [(b, r) for b, r in coarse if r.size]
    assert _cost(groups) <= _cost(coarse)
    assert _cost(groups) <= _cost([(64, np.arange(lengths.size))])


def test_degenerate_inputs() -> None:
    assert length_groups(np.array([], dtype=np.int64)) == []
    [(t, rows)] = length_groups(np.array([0, 0, 1]))
    assert t == 1 and rows.tolist() == [0, 1, 2]


def test_encoding_does_not_depend_on_the_grouping() -> None:
    model = OnnxRiskModel(load_artifact(WINDOW_ARTIFACT)).load()  # the window encoder's
    rng = np.random.default_rng(5)
    b, t = 40, 64
    hist_len = np.concatenate([[0, 1, 2, 63, 64], rng.integers(0, 65, b - 5)])
    pad = np.arange(t)[None, :] >= hist_len[:, None]
    fb = FeatureBatch(
        hist_num=np.where(pad[..., None], 0, rng.standard_normal((b, t, N_NUMERIC))).astype(
            np.float32
        ),
        hist_mcc=np.where(pad, 0, rng.integers(2, 20, (b, t))),
        hist_channel=np.where(pad, 0, rng.integers(1, 4, (b, t))),
        hist_pad=pad,
        hist_len=hist_len,
        cur_num=rng.standard_normal((b, N_NUMERIC)).astype(np.float32),
        cur_mcc=rng.integers(2, 20, b),
        cur_channel=rng.integers(1, 4, b),
        cur_raw=np.zeros((b, N_NUMERIC), np.float32),
    )
    grouped = encode_bucketed(model, fb, np.arange(b))
    padded = model.encode(fb)  # every row padded to 64
    np.testing.assert_allclose(grouped, padded, atol=2e-5)
    model.on_gpu = True  # the coarse-bucket path a GPU session takes
    try:
        coarse = encode_bucketed(model, fb, np.arange(b))
    finally:
        model.on_gpu = False
    np.testing.assert_allclose(coarse, padded, atol=2e-5)
    subset = np.array([3, 0, 17, 1])  # rows out of order, new holders among them
    np.testing.assert_allclose(encode_bucketed(model, fb, subset), padded[subset], atol=2e-5)
    assert len(length_groups(hist_len)) > 1  # the test really mixed group sizes
