"""Serving windows: a batch's events with the history the store returned for each card.

``merged_windows`` is the definition: everything known (stored sequences and the batch)
is deduplicated on (card, transaction) and sorted into the training layout, whose window
code (``features.featurize.windows_from_sorted``) it then reuses, so training and serving
share it. Most cards in a serving batch just extend their stored sequence: every event of
the card in the batch is new and later than all it has stored. For those cards
``windows_for_batch`` lays the same training layout out by arithmetic, sorting only the
batch's own events, and gives the rest (replays, late events, a sequence out of order)
to the merge, card by card. The two give the same windows, byte for byte (tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from features.events import RECORD_DTYPE, opaque
from features.featurize import FeatureSpec, Windows, windows_from_sorted

_NONE = np.zeros(0, dtype=RECORD_DTYPE)
#: below this many rows the merge is the cheaper path (its fixed cost is smaller)
_GATHER_FROM = 3


def windows_for_batch(
    prior: dict[str, np.ndarray], user_ids: list[str], records: np.ndarray, spec: FeatureSpec
) -> Windows:
    """Serving path: windows for a batch, from the store's prior sequences plus the batch
    (``appended_windows`` for the cards it can take, ``merged_windows`` for the others)."""
    n = records.size
    if n < _GATHER_FROM:
        return merged_windows(prior, user_ids, records, spec)
    rows, appended = appended_windows(prior, user_ids, records, spec)
    if rows.size == n:
        return appended
    rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
    merged = merged_windows(prior, [user_ids[i] for i in rest.tolist()], records[rest], spec)
    if rows.size == 0:
        return merged
    width = max(appended.records.shape[1], merged.records.shape[1])
    out = np.zeros((n, width), dtype=RECORD_DTYPE)
    opaque(out)[rows, : appended.records.shape[1]] = opaque(appended.records)
    opaque(out)[rest, : merged.records.shape[1]] = opaque(merged.records)
    hist_len = np.zeros(n, dtype=np.int64)
    hist_len[rows], hist_len[rest] = appended.hist_len, merged.hist_len
    return Windows(out, hist_len)


def appended_windows(
    prior: Mapping[str, np.ndarray],
    user_ids: Sequence[str],
    records: np.ndarray,
    spec: FeatureSpec,
) -> tuple[np.ndarray, Windows]:
    """The windows of the rows whose card only appends to its stored sequence.

    A card qualifies when its stored sequence is strictly increasing in (ts, tx) (the
    store's order), no id of its batch events is stored or repeated in the batch, and
    its earliest batch event is later than its last stored one. Its part of the training
    layout is then its stored sequence followed by its batch events in (ts, tx) order:
    placed by arithmetic, with no sort of the stored records. Returns the qualifying rows
    (ascending) and their windows, as ``merged_windows`` builds them for those rows.
    """
    n = records.size
    cards = list(dict.fromkeys(user_ids))
    code = {u: i for i, u in enumerate(cards)}
    row_card = np.fromiter((code[u] for u in user_ids), dtype=np.int64, count=n)
    parts = [prior.get(u, _NONE) for u in cards]
    stored_len = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(cards))
    stored_end = np.cumsum(stored_len)
    stored_off = stored_end - stored_len  # each card's first stored record
    stored = np.frombuffer(b"".join([p.tobytes() for p in parts]), dtype=RECORD_DTYPE)
    stored_card = np.repeat(np.arange(len(cards)), stored_len)
    ts, tx = records["ts"], records["tx"]
    s_ts, s_tx = stored["ts"], stored["tx"]
    ok = np.ones(len(cards), dtype=bool)
    # no id twice among a card's batch events (a replay inside the batch)
    by_id = np.lexsort((tx, row_card))
    ic, itx = row_card[by_id], tx[by_id]
    ok[ic[1:][(ic[1:] == ic[:-1]) & (itx[1:] == itx[:-1])]] = False
    # the batch's events of each card in (ts, tx) order
    order = np.lexsort((tx, ts, row_card))
    oc, ots, otx = row_card[order], ts[order], tx[order]
    same = oc[1:] == oc[:-1]
    first_of_card = np.ones(n, dtype=bool)
    first_of_card[1:] = ~same
    if stored.size:
        rising = _after(s_ts[1:], s_tx[1:], s_ts[:-1], s_tx[:-1])
        ok[stored_card[1:][(stored_card[1:] == stored_card[:-1]) & ~rising]] = False
        # the card's earliest batch event is later than its last stored one
        fc, fts, ftx = oc[first_of_card], ots[first_of_card], otx[first_of_card]
        last = np.maximum(stored_end - 1, 0)[fc]
        later = _after(fts, ftx, s_ts[last], s_tx[last])
        ok[fc[(stored_len[fc] > 0) & ~later]] = False
        # no batch id among the card's stored ones (a replay, at whatever time)
        ok[_stored_ids(row_card, tx, stored_len, stored_off, s_tx)] = False
    # the layout of the qualifying cards: each card's stored events, then its batch ones
    keep_card = ok[stored_card]
    batch_len = np.bincount(row_card, minlength=len(cards))
    span = np.where(ok, stored_len + batch_len, 0)
    card_off = np.cumsum(span) - span
    rank = np.arange(n) - np.flatnonzero(first_of_card)[np.cumsum(first_of_card) - 1]
    layout = np.zeros(int(span.sum()), dtype=RECORD_DTYPE)
    layout_card = np.repeat(np.arange(len(cards)), span)
    s_pos = card_off[stored_card] + np.arange(stored.size) - stored_off[stored_card]
    opaque(layout)[s_pos[keep_card]] = opaque(stored)[keep_card]
    b_ok = ok[oc]
    b_pos = card_off[oc] + stored_len[oc] + rank
    opaque(layout)[b_pos[b_ok]] = opaque(records)[order[b_ok]]
    rows = np.sort(order[b_ok])
    index = np.empty(n, dtype=np.int64)
    index[order] = b_pos
    return rows, windows_from_sorted(layout, layout_card, index[rows], spec)


def _after(
    ts: np.ndarray, tx: np.ndarray, other_ts: np.ndarray, other_tx: np.ndarray
) -> np.ndarray:
    """Whether each (ts, tx) is strictly after the other's, in the store's order."""
    return (ts > other_ts) | ((ts == other_ts) & (tx > other_tx))


def _stored_ids(
    row_card: np.ndarray,
    tx: np.ndarray,
    stored_len: np.ndarray,
    stored_off: np.ndarray,
    s_tx: np.ndarray,
) -> np.ndarray:
    """The cards of the batch rows whose id is among their card's stored ids."""
    per_row = stored_len[row_card]
    total = int(per_row.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    row = np.repeat(np.arange(row_card.size), per_row)
    first = stored_off[row_card]
    at = np.arange(total) + np.repeat(first - (np.cumsum(per_row) - per_row), per_row)
    return row_card[row[s_tx[at] == tx[row]]]


def merged_windows(
    prior: dict[str, np.ndarray], user_ids: list[str], records: np.ndarray, spec: FeatureSpec
) -> Windows:
    """Windows for a batch by merging the prior sequences with it: the definition.

    Builds one array of everything known (stored events ∪ this batch), deduplicated on
    (user, transaction) with the stored copy winning (as the store does), sorted by
    (user, ts, tx) — the training layout — and then reuses ``windows_from_sorted``. So a
    user's several events in one batch see each other in time order, a replayed event
    never sees itself, and training and serving share the window code itself.
    """
    users = list(dict.fromkeys(user_ids))
    code = {u: i for i, u in enumerate(users)}
    parts = [prior.get(u, records[:0]) for u in users]
    n_prior = sum(p.size for p in parts)
    n = records.size
    # one bytes join instead of np.concatenate: concatenating hundreds of structured
    # arrays promotes their dtypes field by field and cost more than the rest of this
    all_rec = np.frombuffer(
        b"".join([*(p.tobytes() for p in parts), records.tobytes()]), dtype=RECORD_DTYPE
    )
    all_code = np.concatenate(
        [
            np.repeat(np.arange(len(users)), [p.size for p in parts]),
            np.fromiter((code[u] for u in user_ids), np.int64, n),
        ]
    )
    is_batch = np.arange(all_rec.size) >= n_prior
    # 1) dedup on (user, tx): the first occurrence (stored, then earliest in batch) wins
    by_id = np.lexsort((np.arange(all_rec.size), all_rec["tx"], all_code))
    code_s, tx_s = all_code[by_id], all_rec["tx"][by_id]
    same = np.zeros(by_id.size, dtype=bool)
    same[1:] = (code_s[1:] == code_s[:-1]) & (tx_s[1:] == tx_s[:-1])
    run_start = np.maximum.accumulate(np.where(~same, np.arange(by_id.size), 0))
    rep = np.empty(all_rec.size, dtype=np.int64)
    rep[by_id] = by_id[run_start]  # each row → the row that represents its (user, tx)
    kept = np.sort(by_id[~same])
    # 2) the survivors in the training layout, sorted by (user, ts, tx)
    order = kept[np.lexsort((all_rec["tx"][kept], all_rec["ts"][kept], all_code[kept]))]
    position = np.empty(all_rec.size, dtype=np.int64)
    position[order] = np.arange(order.size)
    index = position[rep[is_batch]]
    return windows_from_sorted(
        opaque(all_rec)[order].view(RECORD_DTYPE), all_code[order], index, spec
    )


def windows_for_batch_isolated(
    prior: dict[str, np.ndarray],
    user_ids: list[str],
    records: np.ndarray,
    isolated: np.ndarray,
    spec: FeatureSpec,
) -> Windows:
    """``windows_for_batch`` where the rows flagged in ``isolated`` are seen by no other row.

    For dry runs: a dry-run transaction must change nothing another decision sees, so it
    never enters another row's window; it sees the stored history and the batch's other,
    non-isolated events of its card (as it would if it were real), never another dry run.
    """
    if len(user_ids) == 1 or not isolated.any():  # alone in its batch: nothing to hide from
        return windows_for_batch(prior, user_ids, records, spec)
    wet = np.flatnonzero(~isolated)
    parts: list[tuple[np.ndarray, Windows]] = []
    if wet.size:
        parts.append(
            (wet, windows_for_batch(prior, [user_ids[i] for i in wet], records[wet], spec))
        )
    for i in np.flatnonzero(isolated):
        user = user_ids[i]
        rows = np.array([*(j for j in wet if user_ids[j] == user), i], dtype=np.int64)
        w = windows_for_batch(prior, [user] * rows.size, records[rows], spec)
        parts.append((np.array([i]), Windows(w.records[-1:], w.hist_len[-1:])))
    width = max(w.records.shape[1] for _, w in parts)
    out = np.zeros((len(user_ids), width), dtype=RECORD_DTYPE)
    hist_len = np.zeros(len(user_ids), dtype=np.int64)
    for rows, w in parts:
        out[rows, : w.records.shape[1]] = w.records
        hist_len[rows] = w.hist_len
    return Windows(out, hist_len)
