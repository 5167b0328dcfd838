"""Whole card sequences for the incremental model: each event's step features, once.

The incremental model reads every event as it was featurized when it was the current
event (``cur_*``: against its own 30-day window), so the training set is featurized
once, not once per example, and a card is one row of a batch: events sorted by time
(``models.dataset`` keeps them sorted by card, then time), padded on the right.
No torch here: evaluation reads the same layout to replay cards through ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.featurize import FeatureSpec
from models.dataset import LabelledData


@dataclass(frozen=True)
class StepFeatures:
    """Per event, in data order: numeric [N, F], MCC and channel ids, entity inputs."""

    num: np.ndarray
    mcc: np.ndarray
    channel: np.ndarray
    entity: np.ndarray | None

    @classmethod
    def of(cls, data: LabelledData, spec: FeatureSpec, chunk: int = 8192) -> StepFeatures:
        nums, mccs, chans, ents = [], [], [], []
        for s in range(0, len(data), chunk):
            fb = data.features(np.arange(s, min(s + chunk, len(data))), spec)
            nums.append(fb.cur_num)
            mccs.append(fb.cur_mcc)
            chans.append(fb.cur_channel)
            if fb.cur_entity is not None:
                ents.append(fb.cur_entity)
        return cls(
            np.concatenate(nums),
            np.concatenate(mccs),
            np.concatenate(chans),
            np.concatenate(ents) if ents else None,
        )


def card_runs(user_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each card's contiguous run of events."""
    if user_codes.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cut = np.flatnonzero(np.diff(user_codes)) + 1
    start = np.concatenate([[0], cut]).astype(np.int64)
    end = np.concatenate([cut, [user_codes.size]]).astype(np.int64)
    return start, end - start


def card_batches(
    lengths: np.ndarray, max_tokens: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Cards (indices into ``lengths``) grouped by similar length, at most ``max_tokens``
    padded tokens per batch; in random order when ``rng`` is given."""
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    batches: list[np.ndarray] = []
    i = 0
    while i < order.size:
        j = i + 1  # sorted ascending: the last card added is the longest
        while j < order.size and int(lengths[order[j]]) * (j - i + 1) <= max_tokens:
            j += 1
        batches.append(order[i:j])
        i = j
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches
