"""Calibration targets (#20): a recall target, and the most an alert budget can catch."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import alert_budget, at_threshold, weighted_recall_threshold


def test_a_recall_target_gets_the_fewest_alerts_that_reach_it() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < 0.01).astype(int)
    score = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1)
    w = np.where(y == 1, 1.0, 5.0)  # subsampled negatives, weighted back
    for target in (0.5, 0.8, 0.95):
        t = weighted_recall_threshold(y, score, w, target)
        assert at_threshold(y, score, t, w)["recall"] >= target
        fewer = np.nextafter(t, 2.0)  # the next threshold up no longer reaches it
        assert at_threshold(y, score, fewer, w)["recall"] < target
    with pytest.raises(ValueError, match="no fraud"):
        weighted_recall_threshold(np.zeros(10), np.ones(10), None, 0.5)


def test_the_alert_budget_caps_recall_below_the_fraud_rate() -> None:
    assert alert_budget(0.005, 0.01)["max_recall"] == 0.5  # half the fraud, at best
    assert alert_budget(0.02, 0.01)["max_recall"] == 1.0
