"""Group sequences by history length so the encoder pads as little as it pays for.

The encoder's CPU cost is a fixed cost per call, a cost per sequence and a cost per
padded position (the constants below; how they were measured is in docs/BENCHMARKS.md).
The artifact's coarse buckets (16, 32, 64, …) made a 3-event history pay for 16
positions and a 33-event one for 64; most users' histories are either short (new
cards) or at the cap, so much of the encoder's work was padding.

Exact grouping is optimal for a given cost model: sort the distinct lengths, and split
them into contiguous groups, each padded to its longest member, choosing the split
that minimises calls × call cost + rows × (row cost + position cost × padded length).
A dynamic program over at most ``max_history + 1`` distinct lengths does it.

On a GPU, calls are dear and padding nearly free; callers keep the coarse buckets there.
"""

from __future__ import annotations

import numpy as np

#: costs in units of one padded position (see the module docstring)
CALL_COST = 27.0
ROW_COST = 2.0


def length_groups(
    lengths: np.ndarray, call_cost: float = CALL_COST, row_cost: float = ROW_COST
) -> list[tuple[int, np.ndarray]]:
    """``[(padded_length, row_indices), …]`` covering every row once; lengths ≥ 1 padded."""
    lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)
    if lengths.size == 0:
        return []
    distinct, inverse, counts = np.unique(lengths, return_inverse=True, return_counts=True)
    k = distinct.size
    before = np.concatenate([[0], np.cumsum(counts)])  # rows with a shorter length
    best = np.zeros(k + 1)  # best[j]: cheapest cover of the j shortest lengths
    start = np.zeros(k + 1, dtype=np.int64)  # where the last group of that cover starts
    for j in range(1, k + 1):
        rows = before[j] - before[:j]  # rows in a group of lengths i..j-1, for every i
        cost = best[:j] + call_cost + rows * (row_cost + distinct[j - 1])
        i = int(np.argmin(cost))
        best[j], start[j] = cost[i], i
    groups = []
    j = k
    while j > 0:
        i = int(start[j])
        members = np.flatnonzero((inverse >= i) & (inverse < j))
        groups.append((int(distinct[j - 1]), members))
        j = i
    return groups[::-1]
