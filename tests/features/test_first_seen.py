"""``_first_seen`` marks each non-zero value's first position in its row: the 'new
merchant' and 'new device' features and the tree's shares of them rest on it."""

from __future__ import annotations

import numpy as np
import pytest

from features.featurize import _first_seen


def _reference(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    seen: set[tuple[int, int]] = set()
    out = []
    for value, row in zip(values.tolist(), rows.tolist(), strict=True):
        out.append(value != 0 and (row, value) not in seen)
        seen.add((row, value))
    return np.array(out, dtype=bool)


@pytest.mark.parametrize("seed", range(5))
def test_first_seen_matches_a_set_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 40, size=30)
    rows = np.repeat(np.arange(counts.size), counts)
    # few distinct values, shared across rows, large hashes and unknowns (0) among them
    pool = np.array([0, 1, 7, 2**63 + 5, 2**64 - 1, 12345678901234], dtype=np.uint64)
    values = pool[rng.integers(0, pool.size, size=rows.size)]
    assert np.array_equal(_first_seen(values, rows), _reference(values, rows))


def test_first_seen_on_edge_shapes() -> None:
    empty = np.zeros(0, dtype=np.uint64)
    assert _first_seen(empty, np.zeros(0, dtype=np.int64)).shape == (0,)
    one_row = np.array([5, 5, 0, 6, 5, 6], dtype=np.uint64)
    got = _first_seen(one_row, np.zeros(6, dtype=np.int64))
    assert got.tolist() == [True, False, False, True, False, False]
