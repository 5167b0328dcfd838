"""The pure scorer: histories and a batch → features → model → scores, reasons, cases.

No I/O and no event loop: the coordinator (``scoring.engine``) reads the store and the
thresholds and runs these functions in its model thread (ONNX Runtime releases the GIL).
The in-memory embedding cache is read here because it decides which rows need the
encoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from features.contracts import Reason, SimilarCase
from features.current_features import current_features
from features.entity_profile import (
    ENTITY_KINDS,
    N_ENTITY,
    entity_presence,
    features_from_stats,
)
from features.featurize import (
    FeatureBatch,
    FeatureSpec,
    Windows,
    featurize_windows,
    normalize_entity,
    windows_including_current,
)
from features.serving_windows import windows_for_batch_isolated
from scoring.bundle import ModelBundle
from scoring.embedding_cache import (
    history_versions,
    next_tail_versions,
    tail_versions,
)
from scoring.entity_reasons import explain_entities
from scoring.errors import ModelLoadError
from scoring.incremental_state import advance
from scoring.length_groups import length_groups
from scoring.metrics import MODEL_LATENCY_MS
from scoring.onnx_model import OnnxRiskModel
from scoring.reasons import explain


@dataclass(frozen=True)
class Scored:
    """One batch through the model: its windows, features, embeddings and scores."""

    windows: Windows
    features: FeatureBatch
    embeddings: np.ndarray
    probs: np.ndarray
    times: dict[str, tuple[int, int]]  # featurize, encoder, head: epoch ns (for traces)
    #: raw merchant/device statistics [B, kinds, N_STATS] (None: no entity store)
    entity_stats: np.ndarray | None = None
    #: incremental artifacts: the state each row was scored from (its history's)
    states: np.ndarray | None = None
    #: incremental artifacts: the cards' next states, to step and cache after scoring
    pending: PendingStates | None = None


def score_batch(
    bundle: ModelBundle,
    prior: dict[str, np.ndarray],
    users: list[str],
    records: np.ndarray,
    dry: np.ndarray,
    entity_stats: np.ndarray | None = None,
) -> Scored:
    """Score every row; the encoder runs only where the cache has no fresh embedding.

    ``entity_stats``: the rows' merchant/device statistics (``scoring.state.entity_store``),
    used when the model has entity inputs.
    """
    model = bundle.model
    spec = model.artifact.spec
    w0 = time.time_ns()
    t0 = time.perf_counter()
    win = windows_for_batch_isolated(prior, users, records, dry, spec)
    entity = entity_inputs(records, entity_stats, spec)
    if model.artifact.incremental:  # the history is in the state: the current event only
        fb = current_features(win, spec, entity, with_aggregates=model.tree is not None)
    else:
        fb = featurize_windows(win, spec, entity=entity)
    t1 = time.perf_counter()
    w1 = time.time_ns()
    MODEL_LATENCY_MS.labels("featurize").observe((t1 - t0) * 1000)
    states = pending = None
    if model.artifact.incremental:
        versions = tail_versions(win.records, win.hist_len, model.state_layout.kept)
        emb, states, pending = incremental_embeddings(bundle, users, win, fb, versions, dry)
    else:
        versions = history_versions(win)
        if bundle.cache is not None:
            hit, emb = bundle.cache.get(users, versions)
        else:
            hit, emb = (
                np.zeros(len(users), bool),
                np.zeros((len(users), model.artifact.embedding_dim), np.float32),
            )
        miss = np.flatnonzero(~hit)
        if miss.size:
            emb[miss] = encode_bucketed(model, fb, miss)
    t2 = time.perf_counter()
    w2 = time.time_ns()
    MODEL_LATENCY_MS.labels("encoder").observe((t2 - t1) * 1000)
    probs = model.score(fb, embedding=emb)
    MODEL_LATENCY_MS.labels("head").observe((time.perf_counter() - t2) * 1000)
    times = {"featurize": (w0, w1), "encoder": (w1, w2), "head": (w2, time.time_ns())}
    return Scored(win, fb, emb, probs, times, entity_stats, states, pending)


@dataclass(frozen=True)
class PendingStates:
    """Each card's state after its last stored event in a batch, still to be stepped and
    cached (``store_next_states``): off the decision's path, before the next batch."""

    bundle: ModelBundle
    cards: list[str]
    versions: np.ndarray  # the history version each card's next event will see
    states: np.ndarray  # the state each card's last row was scored from
    cur_num: np.ndarray
    cur_mcc: np.ndarray
    cur_channel: np.ndarray


def incremental_embeddings(
    bundle: ModelBundle,
    users: list[str],
    win: Windows,
    fb: FeatureBatch,
    versions: np.ndarray,
    dry: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, PendingStates | None]:
    """Embeddings and states each row is scored from (incremental artifacts), and what
    caching each card's next state needs; ``fb`` holds the current events' inputs
    (``features.current_features``).

    A row's state is, in order of preference: the cache's for the row's exact history;
    for a card's second and later events in the batch, its previous (stored) row's state
    advanced by that row's event, when that is exactly this row's history; a new card's
    empty state; else rebuilt from the window (``OnnxRiskModel.rebuild_states``).
    Rows are resolved in order of their depth in the batch, so a chain never waits.
    """
    model = bundle.model
    lay = model.state_layout
    n = len(users)
    empty = model.empty_history_embedding
    if empty is None:
        raise ModelLoadError("model not loaded")
    if bundle.cache is not None:
        done, emb, states = bundle.cache.get_states(users, versions, lay.width)
    else:
        done = np.zeros(n, bool)
        emb = np.zeros((n, model.artifact.embedding_dim), np.float32)
        states = np.zeros((n, lay.width), np.float32)
    new = ~done & (win.hist_len == 0)
    states[new], emb[new] = lay.empty(int(new.sum())), empty
    done |= new
    prev = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    last: dict[str, int] = {}
    for i, user in enumerate(users):
        j = last.get(user)
        if j is not None:
            prev[i], depth[i] = j, depth[j] + 1
        if not dry[i]:  # a dry run is seen by no other row
            last[user] = i
    spec = model.artifact.spec
    stored = np.fromiter(last.values(), np.int64, len(last))  # each card's last stored row
    # the history each row leaves behind, where a later row or the cache needs it
    need = np.union1d(stored, prev[prev >= 0])
    after = np.zeros(n, dtype=np.uint64)
    if need.size:
        after[need] = next_tail_versions(win.take(need), spec, lay.kept)
    for d in range(int(depth.max(initial=0)) + 1):
        at = np.flatnonzero((depth == d) & ~done)
        chain = at[(prev[at] >= 0)]
        chain = chain[versions[chain] == after[prev[chain]]]
        if chain.size:
            p = prev[chain]
            states[chain], emb[chain] = advance(
                model.step, lay, states[p], fb.cur_num[p], fb.cur_mcc[p], fb.cur_channel[p]
            )
            done[chain] = True
        cold = at[~done[at]]
        if cold.size:  # a miss: the history's features, for these rows only
            hist = featurize_windows(win.take(cold), spec)
            states[cold], emb[cold] = model.rebuild_states(
                hist.hist_num, hist.hist_mcc, hist.hist_channel, hist.hist_len
            )
            done[cold] = True
    pending = None
    if bundle.cache is not None and stored.size:
        pending = PendingStates(
            bundle,
            [users[i] for i in stored.tolist()],
            after[stored],
            states[stored],
            fb.cur_num[stored],
            fb.cur_mcc[stored],
            fb.cur_channel[stored],
        )
    return emb, states, pending


def store_next_states(pending: PendingStates) -> int:
    """Step each card of ``pending`` by its last event and cache the state under the
    history version it leaves (blocking; returns how many were written).

    The engine runs this on its model thread right after the batch's scoring, so the
    card's next batch, queued behind it, finds the state: a refresh after publishing
    raced that batch and lost when a card's events came fast, and each loss rebuilt the
    state from the window. A card whose entry already has that version (a replayed
    event: the store kept the first copy) is left as it is: a replay never moves a state.
    """
    cache = pending.bundle.cache
    if cache is None:
        return 0
    moved = np.flatnonzero(cache.version_of(pending.cards) != pending.versions)
    if moved.size == 0:
        return 0
    model = pending.bundle.model
    states, emb = advance(
        model.step,
        model.state_layout,
        pending.states[moved],
        pending.cur_num[moved],
        pending.cur_mcc[moved],
        pending.cur_channel[moved],
    )
    cache.put([pending.cards[i] for i in moved.tolist()], pending.versions[moved], emb, states)
    return int(moved.size)


def entity_inputs(
    records: np.ndarray, stats: np.ndarray | None, spec: FeatureSpec
) -> np.ndarray | None:
    """Raw entity inputs of the rows, when the spec uses them and statistics exist."""
    if not spec.entity or stats is None:
        return None
    return features_from_stats(stats, entity_presence(records), records["amount"])


def explain_alerts(
    bundle: ModelBundle,
    scored: Scored,
    alerts: np.ndarray,
    reasons_top: int,
    similar_k: int,
) -> tuple[dict[int, list[Reason]], dict[int, list[SimilarCase]]]:
    """Reasons and the nearest confirmed cases for the rows ``alerts`` (indices)."""
    if alerts.size == 0:
        return {}, {}
    model = bundle.model
    fb, emb = scored.features, scored.embeddings

    ent = None if fb.cur_entity is None else fb.cur_entity[alerts]

    def head(e: np.ndarray, num: np.ndarray) -> np.ndarray:
        reps = e.shape[0] // alerts.size
        return model.head_logits(
            e,
            num.astype(np.float32),
            np.repeat(fb.cur_mcc[alerts], reps),
            np.repeat(fb.cur_channel[alerts], reps),
            None if ent is None else np.repeat(ent, reps, axis=0),
        )

    why = explain(
        head,
        emb[alerts],
        fb.cur_num[alerts],
        fb.cur_raw[alerts],
        fb.cur_channel[alerts],
        reasons_top,
    )
    if ent is not None and scored.entity_stats is not None:
        spec = model.artifact.spec
        absent = normalize_entity(np.zeros((1, N_ENTITY)), spec)[0]
        reps = len(ENTITY_KINDS) + 1

        def head_entity(e_in: np.ndarray) -> np.ndarray:
            return model.head_logits(
                np.repeat(emb[alerts], reps, axis=0),
                np.repeat(fb.cur_num[alerts], reps, axis=0),
                np.repeat(fb.cur_mcc[alerts], reps),
                np.repeat(fb.cur_channel[alerts], reps),
                e_in.astype(np.float32),
            )

        extra = explain_entities(head_entity, ent, absent, scored.entity_stats[alerts])
        why = [
            sorted([*a, *b], key=lambda r: -r.contribution)[:reasons_top]
            for a, b in zip(why, extra, strict=True)
        ]
    reasons = {int(i): r for i, r in zip(alerts, why, strict=True)}
    similar: dict[int, list[SimilarCase]] = {}
    shown = model.artifact.similar_cases_shown
    similar_k = similar_k if shown is None else min(similar_k, shown)
    if bundle.memory is not None and similar_k > 0:
        if scored.states is not None:  # incremental: the state advanced by the event
            query = advance(
                model.step,
                model.state_layout,
                scored.states[alerts],
                fb.cur_num[alerts],
                fb.cur_mcc[alerts],
                fb.cur_channel[alerts],
            )[1]
        else:
            query = case_queries(model, scored.windows, alerts)
        near = bundle.memory.nearest(query, similar_k)
        similar = {
            int(i): [SimilarCase(case_id=c, similarity=round(s, 4)) for c, s in n]
            for i, n in zip(alerts, near, strict=True)
        }
    return reasons, similar


def case_queries(model: OnnxRiskModel, windows: Windows, rows: np.ndarray) -> np.ndarray:
    """History embeddings *including* each row's event: what the case memory holds for a
    confirmed fraud, so an alert is compared with cases as they were when confirmed
    (encoder runs for these rows only: alerts are a small share of events)."""
    spec = model.artifact.spec
    win = windows_including_current(windows.take(rows), spec)
    fb = featurize_windows(win, spec)
    return encode_bucketed(model, fb, np.arange(rows.size))


def score_alone(
    model: OnnxRiskModel,
    prior: dict[str, np.ndarray],
    users: list[str],
    records: np.ndarray,
    dry: np.ndarray,
    entity_stats: np.ndarray | None = None,
) -> np.ndarray:
    """Scores of ``model`` on its own features (its spec: statistics, vocabulary, history
    length), with no cache: what a shadow model needs, whatever the primary is."""
    spec = model.artifact.spec
    fb = featurize_windows(
        windows_for_batch_isolated(prior, users, records, dry, spec),
        spec,
        entity=entity_inputs(records, entity_stats, spec),
    )
    emb = encode_bucketed(model, fb, np.arange(len(users)))
    return model.score(fb, embedding=emb)


def encode_bucketed(model: OnnxRiskModel, fb: FeatureBatch, rows: np.ndarray) -> np.ndarray:
    """Encoder on ``rows``, grouped by history length so short histories stay short.

    On CPU the groups come from the cost model in ``scoring.length_groups`` (padding
    costs in proportion, each call has a fixed cost); on a GPU, where padding is nearly
    free and calls are not, from the artifact's coarse buckets.
    """
    spec = model.artifact.spec
    out = np.zeros((rows.size, model.artifact.embedding_dim), dtype=np.float32)
    lengths = fb.hist_len[rows]
    todo = np.arange(rows.size)
    empty = model.empty_history_embedding
    if empty is not None:  # new card holders: one constant, no encoder run
        out[lengths == 0] = empty
        todo = np.flatnonzero(lengths > 0)
    if model.on_gpu:
        buckets = np.array([spec.bucket(int(n)) for n in lengths[todo]], dtype=np.int64)
        groups = [(int(t), todo[buckets == t]) for t in np.unique(buckets)]
    else:
        groups = [(t, todo[sel]) for t, sel in length_groups(lengths[todo])]
    for t, sel in groups:
        r = rows[sel]
        t = int(min(t, fb.hist_num.shape[1]))
        part = FeatureBatch(
            hist_num=fb.hist_num[r, :t],
            hist_mcc=fb.hist_mcc[r, :t],
            hist_channel=fb.hist_channel[r, :t],
            hist_pad=fb.hist_pad[r, :t],
            hist_len=fb.hist_len[r],
            cur_num=fb.cur_num[r],
            cur_mcc=fb.cur_mcc[r],
            cur_channel=fb.cur_channel[r],
            cur_raw=fb.cur_raw[r],
        )
        out[sel] = model.encode(part)
    return out
