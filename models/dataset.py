"""Labelled data for training and evaluation, in the training layout.

Events are sorted by (user, event time, tx hash) — the layout ``windows_from_sorted``
expects — and split by *time*: train < validation < test, so the test period is later
than anything trained on. An event's history may reach back into an earlier period
(that is the past, as in production); its label never leaks forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.column_mapping import ColumnMapping
from features.entity_profile import ENTITY_KINDS, entity_presence, features_from_stats
from features.entity_replay import replay_entity_stats
from features.events import hash_ids, records_from_table
from features.featurize import (
    FeatureBatch,
    FeatureSpec,
    featurize_windows,
    history_bounds,
    windows_from_sorted,
)
from features.label_delay import LabelDelay
from features.labelled_files import iter_batches


@dataclass
class LabelledData:
    """Sorted records, user codes, labels and optional scenario names."""

    records: np.ndarray
    user_codes: np.ndarray
    user_ids: np.ndarray  # user id per event (strings)
    labels: np.ndarray  # int8
    scenario: np.ndarray  # object array, None for legitimate / unknown
    transaction_ids: np.ndarray
    #: which of the files read each event came from (their order in ``from_files``)
    source: np.ndarray | None = None
    #: raw merchant/device inputs [N, N_ENTITY] once ``attach_entity`` ran
    entity: np.ndarray | None = None
    #: the label-delay model ``entity`` was replayed with
    label_delay: LabelDelay | None = None

    @classmethod
    def from_files(
        cls, paths: Sequence[Path | str], mapping: ColumnMapping | None = None
    ) -> LabelledData:
        """Read one or more labelled files (any supported format), streaming; ``mapping``
        maps a foreign layout onto the contract (``features.column_mapping``)."""
        recs, users, labels, scen, txids, source = [], [], [], [], [], []
        for file_no, path in enumerate(paths):
            for batch in iter_batches(path, mapping=mapping):
                recs.append(records_from_table(batch))
                source.append(np.full(batch.num_rows, file_no, dtype=np.int16))
                users.extend(batch.column("user_id").to_pylist())
                labels.append(batch.column("is_fraud").to_numpy(zero_copy_only=False))
                scen.extend(batch.column("scenario").to_pylist())
                txids.extend(batch.column("transaction_id").to_pylist())
        records = np.concatenate(recs)
        user_arr = np.array(users, dtype=object)
        uniq, codes = np.unique(user_arr.astype(str), return_inverse=True)
        order = np.lexsort((records["tx"], records["ts"], codes))
        return cls(
            records=records[order],
            user_codes=codes[order].astype(np.int64),
            user_ids=uniq[codes[order]],
            labels=np.concatenate(labels).astype(np.int8)[order],
            scenario=np.array(scen, dtype=object)[order],
            transaction_ids=np.array(txids, dtype=object)[order],
            source=np.concatenate(source)[order],
        )

    def __len__(self) -> int:
        return int(self.records.size)

    def entity_kinds_present(self) -> list[str]:
        """The entity ids this data carries (``merchant``, ``device``), if any."""
        return [k for k in ENTITY_KINDS if (self.records[k] != 0).any()]

    def attach_entity(self, delay: LabelDelay) -> bool:
        """Replay merchant/device profiles with labels arriving per ``delay``; False (and
        nothing attached) when the data carries neither id."""
        if not self.entity_kinds_present():
            return False
        uniq, first = np.unique(self.user_codes, return_index=True)
        card_of_code = np.zeros(int(uniq.max(initial=0)) + 1, dtype=np.uint64)
        card_of_code[uniq] = hash_ids(str(u) for u in self.user_ids[first])
        cards = card_of_code[self.user_codes]
        stats = replay_entity_stats(self.records, cards, self.labels, delay)
        self.entity = features_from_stats(
            stats, entity_presence(self.records), self.records["amount"]
        )
        self.label_delay = delay
        return True

    def time_split(
        self, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of train / validation / test, cut at event-time quantiles."""
        ts = self.records["ts"]
        cut1, cut2 = np.quantile(ts, [fractions[0], fractions[0] + fractions[1]])
        return (
            np.flatnonzero(ts < cut1),
            np.flatnonzero((ts >= cut1) & (ts < cut2)),
            np.flatnonzero(ts >= cut2),
        )

    def features(
        self, index: np.ndarray, spec: FeatureSpec, pad_to: int | None = None
    ) -> FeatureBatch:
        """Model inputs for events ``index`` (each against its own history)."""
        index = np.asarray(index)
        win = windows_from_sorted(self.records, self.user_codes, index, spec)
        entity = None if self.entity is None else self.entity[index]
        if spec.entity and entity is None:
            raise ValueError("the model uses entity features: call attach_entity first")
        return featurize_windows(win, spec, pad_to=pad_to, entity=entity)

    def history_lengths(self, index: np.ndarray, spec: FeatureSpec) -> np.ndarray:
        """History length of each event (cheap: no featurization)."""
        return history_bounds(self.records["ts"], self.user_codes, np.asarray(index), spec)[1]


def sample_negatives(
    index: np.ndarray, labels: np.ndarray, rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """All positives + negatives at ``rate``; returns (index, weight) with weight 1/rate
    (training's samples: the tree and the network fit on fraud-rich rows, the weights
    restore the legitimate share)."""
    pos = index[labels[index] == 1]
    neg = index[labels[index] == 0]
    take = rng.choice(neg, size=max(1, round(rate * neg.size)), replace=False) if neg.size else neg
    idx = np.concatenate([pos, take])
    weight = np.concatenate([np.ones(pos.size), np.full(take.size, neg.size / max(take.size, 1))])
    return idx, weight


def cap_negatives(
    labels: np.ndarray, index: np.ndarray, max_negatives: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every fraud of ``index`` and at most ``max_negatives`` legitimate events, in index
    order, with weights that restore the legitimate share (1 for fraud)."""
    y = labels[index]
    neg = np.flatnonzero(y == 0)
    if neg.size <= max_negatives:
        return index, np.ones(index.size)
    rng = np.random.default_rng(seed)
    take = rng.choice(neg, max_negatives, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 1), take]))
    return index[keep], np.where(y[keep] == 0, neg.size / max_negatives, 1.0)


def length_sorted_batches(
    index: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of similar history length (padding costs less), in random order."""
    perm = rng.permutation(index.size)
    chunks: list[np.ndarray] = []
    pool = batch_size * 32
    for start in range(0, perm.size, pool):
        part = perm[start : start + pool]
        part = part[np.argsort(lengths[part], kind="stable")]
        chunks.extend(part[i : i + batch_size] for i in range(0, part.size, batch_size))
    order = rng.permutation(len(chunks))
    return [index[chunks[i]] for i in order]
