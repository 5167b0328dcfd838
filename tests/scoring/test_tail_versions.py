"""``tail_versions`` is the fold its docstring defines, row by row (a plain-Python
reference), for rows with no events, fewer than ``kept`` and more, in one batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import RECORD_DTYPE
from scoring.embedding_cache import _P1, _P2, _P3, tail_versions

_MASK = (1 << 64) - 1


def _reference(tx: np.ndarray, end: int, kept: int) -> int:
    if end == 0:
        return 0
    take = min(end, kept)
    v = (take * int(_P1)) & _MASK
    for t in tx[end - take : end]:
        v = ((v * int(_P2)) ^ (int(t) * int(_P3))) & _MASK
    return v | 1


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(0, 12), kept=st.integers(1, 16))
def test_tail_versions_equal_the_defined_fold(seed: int, rows: int, kept: int) -> None:
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 40))
    records = np.zeros((rows, width), dtype=RECORD_DTYPE)
    records["tx"] = rng.integers(0, 2**64, (rows, width), dtype=np.uint64)
    end = rng.integers(0, width + 1, rows)
    if rows and rng.random() < 0.5:  # every row at least ``kept`` long: the unmasked path
        end = rng.integers(min(kept, width), width + 1, rows)
    got = tail_versions(records, end, kept)
    want = [_reference(records["tx"][i], int(end[i]), kept) for i in range(rows)]
    assert got.dtype == np.uint64
    assert got.tolist() == want
