"""Training: the Transformer+LSTM and the baseline on the same time-ordered split.

Imbalance (fraud ≈ 0.3 %): negatives are downsampled at rate ``r`` (a fresh sample every
epoch, so the model sees many different negatives) and the probability correction
``logit_true = logit_sampled + log(r)`` is baked into the exported head, so served
scores are calibrated probabilities. Downsampling, not class weights, because it also
cuts the epoch cost ~20× — the only way to train on 1M events within minutes on two
CPU cores. Validation negatives are subsampled too and re-weighted by ``1/r_val``, so
validation PR-AUC estimates the PR-AUC on the real class balance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from features.entity_profile import N_ENTITY
from features.featurize import N_CHANNELS, N_NUMERIC, FeatureBatch, FeatureSpec, fit_spec
from features.label_delay import LabelDelay
from models.baseline import TreeFit, baseline_probabilities, fit_tree, tree_features
from models.combine import choose
from models.dataset import LabelledData, length_sorted_batches, sample_negatives
from models.early_stopping import EarlyStopping, report_step
from models.incremental_network import INCREMENTAL, IncrementalConfig, IncrementalRiskModel
from models.metrics import target_threshold, weighted_pr_auc
from models.network import NetworkConfig, RiskModel
from models.train_incremental import (
    CardLayout,
    embeddings_after,
    fit_incremental,
    sequence_logits,
)
from scoring.served_decision import Combination, tree_logit


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in model.json)."""

    seed: int = 0
    epochs: int = 12
    patience: int = 3
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    negative_rate: float = 0.05
    val_negative_rate: float = 0.2
    max_minutes: float = 14.0
    target_alert_rate: float = 0.005
    #: when set, thresholds are chosen on validation to catch this share of fraud with the
    #: fewest alerts, instead of alerting on ``target_alert_rate`` of events
    target_recall: float | None = None
    max_history: int = 256
    #: ``incremental`` (``models.incremental_network``: per-event cost independent of
    #: history length) or ``window`` (``models.network``: re-encodes the window)
    architecture: str = INCREMENTAL
    #: the incremental model's attention band (events per layer)
    band: int = 8
    d_model: int = 64
    n_layers: int = 2
    threads: int = 2
    baseline: bool = True
    #: merchant/device profiles as inputs (used when the data carries either id)
    entity_features: bool = True
    #: when labels reach the bank in the replay that builds them (``features.label_delay``)
    label_delay: str = "mix"
    #: served validation PR-AUC the tree may give up for fewer trees
    #: (``models.tree_budget.choose_rounds``); 0 keeps every early-stopped round that helps
    tree_margin: float = 0.002

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainOutcome:
    """What a training run produced."""

    model: RiskModel | IncrementalRiskModel
    spec: FeatureSpec
    config: TrainConfig
    threshold: float
    history: list[dict[str, float]] = field(default_factory=list)
    baseline: Any = None
    baseline_threshold: float | None = None
    #: the network's own threshold (``threshold`` is the served decision's)
    network_threshold: float | None = None
    #: how the served logit combines the parts, chosen on validation (``models.combine``)
    combination: Combination = field(default_factory=Combination)
    combination_report: dict[str, Any] = field(default_factory=dict)
    #: validation rows of the tree's inputs, for the export's ORT-vs-LightGBM parity check
    tree_parity_rows: np.ndarray | None = None
    split_index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    seconds: float = 0.0
    #: the incremental model's card layout (its step features, computed once)
    layout: CardLayout | None = None


def to_tensors(batch: FeatureBatch) -> dict[str, torch.Tensor]:
    """FeatureBatch → torch tensors (zero-copy where numpy allows)."""
    entity = {} if batch.cur_entity is None else {"cur_entity": torch.from_numpy(batch.cur_entity)}
    return {
        **entity,
        "hist_num": torch.from_numpy(batch.hist_num),
        "hist_mcc": torch.from_numpy(batch.hist_mcc),
        "hist_channel": torch.from_numpy(batch.hist_channel),
        "hist_pad": torch.from_numpy(batch.hist_pad),
        "hist_len": torch.from_numpy(batch.hist_len),
        "cur_num": torch.from_numpy(batch.cur_num),
        "cur_mcc": torch.from_numpy(batch.cur_mcc),
        "cur_channel": torch.from_numpy(batch.cur_channel),
    }


def predict_logits(
    model: RiskModel,
    data: LabelledData,
    index: np.ndarray,
    spec: FeatureSpec,
    lengths: np.ndarray,
    batch_size: int = 512,
) -> np.ndarray:
    """Logits for ``index`` (length-sorted batches, no grad), in the order of ``index``."""
    model.eval()
    out = np.zeros(index.size)
    order = np.argsort(lengths, kind="stable")
    with torch.inference_mode():
        for s in range(0, order.size, batch_size):
            part = order[s : s + batch_size]
            fb = data.features(index[part], spec)
            out[part] = model(to_tensors(fb)).numpy()
    return out


def train(
    data: LabelledData,
    cfg: TrainConfig,
    on_progress: Callable[[str, dict[str, float]], None] | None = None,
) -> TrainOutcome:
    """Fit spec, network (early stopping on validation PR-AUC) and baseline."""
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    report = on_progress or (lambda _event, _values: None)
    train_idx, val_idx, test_idx = data.time_split()
    if data.labels[train_idx].sum() == 0 or data.labels[val_idx].sum() == 0:
        raise ValueError("need fraud examples in both the training and the validation period")
    sample = np.sort(rng.choice(train_idx, size=min(30_000, train_idx.size), replace=False))
    entity_sample = None
    if cfg.entity_features and data.attach_entity(LabelDelay.parse(cfg.label_delay)):
        entity_sample = data.entity[sample]  # type: ignore[index]  # attached just above
    spec = fit_spec(
        data.records,
        data.user_codes,
        sample,
        max_history=cfg.max_history,
        entity_sample=entity_sample,
    )
    lengths = data.history_lengths(np.arange(len(data)), spec)
    net_cfg = NetworkConfig(
        N_NUMERIC,
        spec.n_mcc,
        N_CHANNELS,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_entity=N_ENTITY if spec.entity else 0,
    )
    val_sub, val_w = sample_negatives(val_idx, data.labels, cfg.val_negative_rate, rng)
    split = (train_idx, val_idx, test_idx)
    model: RiskModel | IncrementalRiskModel
    layout: CardLayout | None = None
    if cfg.architecture == INCREMENTAL:
        model, history, layout = fit_incremental(
            data, spec, net_cfg, IncrementalConfig(cfg.band), cfg, split, report, started
        )
        val_logits = sequence_logits(model, layout, layout.length, len(data))[val_sub]
    else:
        model, history = _fit_window(
            data, spec, net_cfg, cfg, split, (val_sub, val_w), lengths, report, started, rng
        )
        val_logits = predict_logits(model, data, val_sub, spec, lengths[val_sub])
    val_y = data.labels[val_sub]
    threshold = calibrate(_sigmoid(val_logits), val_y, val_w, cfg)
    outcome = TrainOutcome(model, spec, cfg, threshold, history, split_index=split, layout=layout)
    outcome.network_threshold = threshold
    if cfg.baseline:
        report("baseline", {})
        x_val = tree_features(data, spec, val_sub)
        tree_cfg = TreeFit(cfg.negative_rate * 2, cfg.tree_margin, cfg.seed, cfg.threads)
        outcome.baseline, rounds_report = fit_tree(
            data, spec, train_idx, (x_val, val_y, val_w, val_logits), tree_cfg, rng
        )
        tree_val = tree_logit(baseline_probabilities(outcome.baseline, x_val))
        outcome.baseline_threshold = calibrate(_sigmoid(tree_val), val_y, val_w, cfg)
        outcome.combination, outcome.combination_report = choose(val_y, val_w, val_logits, tree_val)
        outcome.combination_report["tree_rounds"] = rounds_report
        served = outcome.combination.logit(val_logits, tree_val)
        outcome.threshold = calibrate(_sigmoid(served), val_y, val_w, cfg)
        outcome.tree_parity_rows = x_val[:: max(1, x_val.shape[0] // 4096)]
    outcome.seconds = time.monotonic() - started
    return outcome


def _fit_window(
    data: LabelledData,
    spec: FeatureSpec,
    net_cfg: NetworkConfig,
    cfg: TrainConfig,
    split: tuple[np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    lengths: np.ndarray,
    report: Callable[[str, dict[str, float]], None],
    started: float,
    rng: np.random.Generator,
) -> tuple[RiskModel, list[dict[str, float]]]:
    """The window model: sampled (history, event) examples, early stopping on
    validation PR-AUC; returns the best epoch's model with its calibration offset."""
    train_idx = split[0]
    val_sub, val_w = validation
    model = RiskModel(net_cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    offset = math.log(cfg.negative_rate)
    pos = train_idx[data.labels[train_idx] == 1]
    neg = train_idx[data.labels[train_idx] == 0]
    stop = EarlyStopping(cfg.patience, started + cfg.max_minutes * 60, started, started)
    for epoch in range(cfg.epochs):
        model.train()
        take = rng.choice(neg, size=round(cfg.negative_rate * neg.size), replace=False)
        examples = np.concatenate([pos, take])
        batches = length_sorted_batches(examples, lengths[examples], cfg.batch_size, rng)
        total = 0.0
        for step, idx in enumerate(batches):
            fb = data.features(idx, spec)
            y = torch.from_numpy(data.labels[idx].astype(np.float32))
            loss = loss_fn(model(to_tensors(fb)), y)
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total += float(loss.detach())
            report_step(report, epoch, step, len(batches), total)
        logits = predict_logits(model, data, val_sub, spec, lengths[val_sub]) + offset
        pr_auc = weighted_pr_auc(data.labels[val_sub], logits, val_w)
        # early stop, or the next epoch would not fit in the time budget
        if stop.end_epoch(model, epoch, total / max(len(batches), 1), pr_auc, report):
            break
    stop.finish(model, offset)
    return model, stop.history


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate(score: np.ndarray, y: np.ndarray, w: np.ndarray, cfg: TrainConfig) -> float:
    """The alert threshold for the configured target: a recall, or an alert rate."""
    return target_threshold(y, score, w, cfg.target_recall, cfg.target_alert_rate)


def fraud_case_embeddings(
    model: RiskModel | IncrementalRiskModel,
    data: LabelledData,
    spec: FeatureSpec,
    index: np.ndarray,
    batch_size: int = 512,
    layout: CardLayout | None = None,
) -> np.ndarray:
    """History embeddings *including* each fraud event, for the fraud-case memory.

    A dummy current event is appended after the fraud event, so the fraud event becomes
    the last step of the history the encoder sees (what a later event of that user would
    be scored against).
    """
    from features.featurize import featurize_windows, windows_from_sorted, windows_including_current

    if isinstance(model, IncrementalRiskModel):  # its state after the event
        return embeddings_after(model, layout or CardLayout.of(data, spec), index)
    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, index.size, batch_size):
            win = windows_from_sorted(
                data.records, data.user_codes, index[s : s + batch_size], spec
            )
            fb = featurize_windows(windows_including_current(win, spec), spec)
            t = to_tensors(fb)
            out.append(
                model.encoder(
                    t["hist_num"], t["hist_mcc"], t["hist_channel"], t["hist_pad"], t["hist_len"]
                ).numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, model.cfg.embedding_dim), np.float32)
