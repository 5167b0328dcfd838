"""Entity statistics for a labelled file, as a running worker would have had them.

Events are replayed in event-time order ``(ts, tx)``, with each fraud label inserted at
the time it would have reached the bank (``features.label_delay``); a label known at or
before an event's time is applied before it. Each event reads its merchant's and its
device's profile, then updates them — through ``EntityProfiles``, the same arithmetic
the Redis script runs, so training sees what serving will see.

``warm_up`` rows (``evaluate --history``) are replayed the same way but only to build
state; their own statistics are returned too and the caller ignores them.
"""

from __future__ import annotations

import numpy as np

from features.entity_profile import (
    ENTITY_KINDS,
    N_STATS,
    EntityProfileConfig,
    EntityProfiles,
    card_member,
)
from features.label_delay import LabelDelay


def replay_entity_stats(
    records: np.ndarray,
    cards: np.ndarray,
    labels: np.ndarray,
    delay: LabelDelay,
    config: EntityProfileConfig | None = None,
) -> np.ndarray:
    """Statistics [N, kinds, N_STATS] of every event, in the order of ``records``.

    ``cards`` are the card holders' id hashes; ``labels`` 1 for fraud. Only fraud labels
    are replayed (see ``features.label_delay`` for why).
    """
    n = records.size
    out = np.zeros((n, len(ENTITY_KINDS), N_STATS))
    if n == 0:
        return out
    profiles = EntityProfiles(config)
    order = np.lexsort((records["tx"], records["ts"]))
    fraud = np.flatnonzero(labels == 1)
    known = records["ts"][fraud] + delay.delays_ms(records["tx"][fraud])
    by_known = np.lexsort((records["tx"][fraud], known))
    label_order, known_sorted = fraud[by_known], known[by_known]
    known_by_row = dict(zip(fraud.tolist(), known.tolist(), strict=True))
    ts = records["ts"].tolist()
    amount = records["amount"].tolist()
    tx = records["tx"].tolist()
    ids = {kind: records[kind].tolist() for kind in ENTITY_KINDS}
    members = [card_member(int(c)) for c in cards.tolist()]
    li = 0
    n_labels = label_order.size
    for r in order.tolist():
        t = ts[r]
        while li < n_labels and known_sorted[li] <= t:
            j = int(label_order[li])
            for kind in ENTITY_KINDS:
                if ids[kind][j]:
                    profiles.label(
                        kind, ids[kind][j], card_member(tx[j]), known_by_row[j], True, amount[j]
                    )
            li += 1
        for k, kind in enumerate(ENTITY_KINDS):
            entity = ids[kind][r]
            if entity:
                out[r, k] = profiles.observe(kind, entity, t, members[r], amount[r])
    return out
