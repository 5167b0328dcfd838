"""Training the incremental Transformer+LSTM on whole card sequences.

Every training event is a scored example (its logit from the state after the card's
earlier events), so nothing is subsampled: negatives are down-*weighted* by
``negative_rate`` instead, which has the same effect on the logits as sampling them at
that rate, and the same ``log(rate)`` correction is baked into the exported head. A
card's sequence runs from its first event in the data, so the LSTM state a validation
or test event is scored with carries the card's whole past, as it does in serving.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from features.featurize import FeatureSpec
from models.card_sequences import StepFeatures, card_batches, card_runs
from models.dataset import LabelledData
from models.early_stopping import EarlyStopping, report_step
from models.incremental_network import IncrementalConfig, IncrementalRiskModel
from models.metrics import weighted_pr_auc
from models.network import NetworkConfig

#: padded tokens per training batch (cards of similar length share a batch)
TRAIN_TOKENS = 8192
#: padded tokens per batch when only predicting
PREDICT_TOKENS = 65536


@dataclass
class CardLayout:
    """Where each card's events are, and how many of them fall before each cut."""

    start: np.ndarray
    length: np.ndarray
    steps: StepFeatures

    @classmethod
    def of(cls, data: LabelledData, spec: FeatureSpec) -> CardLayout:
        start, length = card_runs(data.user_codes)
        return cls(start, length, StepFeatures.of(data, spec))

    def prefix(self, member: np.ndarray) -> np.ndarray:
        """Per card, how many of its first events are in ``member`` (a prefix mask:
        events are time-sorted and the split is by time)."""
        if self.start.size == 0:
            return np.zeros(0, np.int64)
        return np.add.reduceat(member.astype(np.int64), self.start)


@dataclass(frozen=True)
class CardBatch:
    """A padded batch of card sequences and where each cell's event sits in the data."""

    tensors: dict[str, torch.Tensor]
    rows: np.ndarray  # [B, T] event index, -1 on padding


def gather(
    steps: StepFeatures, start: np.ndarray, length: np.ndarray, cards: np.ndarray
) -> CardBatch:
    """The sequences of ``cards`` (their first ``length`` events from ``start``)."""
    n = length[cards]
    t = int(n.max(initial=1))
    rows = start[cards, None] + np.arange(t)[None, :]
    valid = np.arange(t)[None, :] < n[:, None]
    rows = np.where(valid, rows, -1)
    safe = np.where(valid, rows, 0)
    tensors = {
        "num": torch.from_numpy(
            np.where(valid[..., None], steps.num[safe], 0.0).astype(np.float32)
        ),
        "mcc": torch.from_numpy(np.where(valid, steps.mcc[safe], 0)),
        "channel": torch.from_numpy(np.where(valid, steps.channel[safe], 0)),
    }
    if steps.entity is not None:
        ent = np.where(valid[..., None], steps.entity[safe], 0.0).astype(np.float32)
        tensors["entity"] = torch.from_numpy(ent)
    return CardBatch(tensors, rows)


def sequence_logits(
    model: IncrementalRiskModel, layout: CardLayout, upto: np.ndarray, n: int
) -> np.ndarray:
    """Logits of every event within each card's first ``upto`` events (NaN elsewhere)."""
    model.eval()
    out = np.full(n, np.nan)
    with torch.inference_mode():
        for cards in card_batches(upto, PREDICT_TOKENS):
            batch = gather(layout.steps, layout.start, upto, cards)
            t = batch.tensors
            logits = model(t["num"], t["mcc"], t["channel"], t.get("entity")).numpy()
            ok = batch.rows >= 0
            out[batch.rows[ok]] = logits[ok]
    return out


def fit_incremental(
    data: LabelledData,
    spec: FeatureSpec,
    net_cfg: NetworkConfig,
    inc: IncrementalConfig,
    cfg: Any,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    report: Callable[[str, dict[str, float]], None],
    started: float,
) -> tuple[IncrementalRiskModel, list[dict[str, float]], CardLayout]:
    """Fit with early stopping on validation PR-AUC (``cfg``: ``models.train.TrainConfig``)."""
    rng = np.random.default_rng(cfg.seed)
    train_idx, val_idx, _ = split
    layout = CardLayout.of(data, spec)
    n = len(data)
    in_train = np.zeros(n, bool)
    in_train[train_idx] = True
    in_val = np.zeros(n, bool)
    in_val[val_idx] = True
    train_len = layout.prefix(in_train)
    val_len = layout.prefix(in_train | in_val)
    labels = torch.from_numpy(data.labels.astype(np.float32))
    model = IncrementalRiskModel(net_cfg, inc)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    stop = EarlyStopping(
        cfg.patience, started + cfg.max_minutes * 60, started, paced_from=time.monotonic()
    )  # paced after featurizing: the epochs' own pace sets the budget
    for epoch in range(cfg.epochs):
        model.train()
        batches = card_batches(train_len, TRAIN_TOKENS, rng)
        total = 0.0
        for step, cards in enumerate(batches):
            batch = gather(layout.steps, layout.start, train_len, cards)
            t = batch.tensors
            logits = model(t["num"], t["mcc"], t["channel"], t.get("entity"))
            ok = torch.from_numpy(batch.rows >= 0)
            y = labels[torch.from_numpy(np.maximum(batch.rows, 0))]
            w = torch.where(y > 0, 1.0, cfg.negative_rate) * ok
            loss = (loss_fn(logits, y) * w).sum() / w.sum().clamp(min=1e-9)
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total += float(loss.detach())
            report_step(report, epoch, step, len(batches), total)
        logits = sequence_logits(model, layout, val_len, n)[val_idx]
        pr_auc = weighted_pr_auc(data.labels[val_idx], logits, np.ones(val_idx.size))
        if stop.end_epoch(model, epoch, total / max(len(batches), 1), pr_auc, report):
            break
    stop.finish(model, math.log(cfg.negative_rate))
    return model, stop.history, layout


def embeddings_after(
    model: IncrementalRiskModel, layout: CardLayout, index: np.ndarray
) -> np.ndarray:
    """The embedding after each event ``index`` (its card's state including it): what
    the fraud-case memory holds for a confirmed case."""
    card_of = np.searchsorted(layout.start, index, side="right") - 1
    upto = np.zeros(layout.start.size, np.int64)
    np.maximum.at(upto, card_of, index - layout.start[card_of] + 1)
    out = np.zeros((index.size, model.cfg.embedding_dim), np.float32)
    where = np.full(layout.steps.num.shape[0], -1, np.int64)
    where[index] = np.arange(index.size)
    model.eval()
    with torch.inference_mode():
        for cards in card_batches(upto, PREDICT_TOKENS):
            batch = gather(layout.steps, layout.start, upto, cards)
            t = batch.tensors
            after = model.encoder.sequence(t["num"], t["mcc"], t["channel"]).numpy()
            k = np.where(batch.rows >= 0, where[np.maximum(batch.rows, 0)], -1)
            out[k[k >= 0]] = after[k >= 0]
    return out
