"""Per-user threshold parameters learned on validation: never worse than one global
threshold there, chosen when some users' legitimate scores sit persistently high."""

from __future__ import annotations

import numpy as np
import pytest

from models.threshold_eval import compare
from models.threshold_learning import GLOBAL_ONLY, candidate_policies, learn_policy
from scoring.thresholds import ThresholdConfig, UserStats, threshold_for


def _period(offsets: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Users with 60 events each; with ``offsets``, a fifth of them are "risky-looking":
    their legitimate scores sit just under the global threshold every time (above it,
    the policy would not learn them: only scores under a user's bar update it)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(400), 60)
    ts = np.tile(np.arange(60), 400) + rng.random(users.size)
    base = np.where(offsets & (users % 5 == 0), 0.06, 0.005)
    scores = np.clip(base * np.exp(0.3 * rng.normal(size=users.size)), 0, 1)
    fraud = rng.random(users.size) < 0.004
    # frauds score where the risky-looking users' everyday scores already are
    scores = np.where(fraud, 0.09 + 0.05 * rng.random(users.size), scores)
    return users.astype(str), ts, scores, fraud.astype(int)


def test_per_user_parameters_are_learned_where_they_cut_false_positives() -> None:
    users, ts, scores, y = _period(offsets=True)
    policy, report = learn_policy(users, ts, scores, y, global_threshold=0.1)
    assert policy["per_user"] is True
    assert report["false_positive_change"] < -0.2
    chosen = report["candidates"][report["chosen"]]
    assert max(chosen["false_positive_change_per_cell"]) < 0  # it wins in every cell
    # the recorded figure is the replay's, not a guess
    again = compare(users, ts, scores, y, 0.1, ThresholdConfig(**policy), scores * 0 + 1)
    fp = again["false_positives_equal_alerts"]
    assert (fp["per_user"] - fp["global"]) / fp["global"] == pytest.approx(
        chosen["false_positive_change"]
    )


def test_without_per_user_offsets_the_policy_is_never_worse_than_global() -> None:
    users, ts, scores, y = _period(offsets=False, seed=1)
    policy, report = learn_policy(users, ts, scores, y, global_threshold=0.1)
    assert report["false_positive_change"] <= 0.0
    if policy == GLOBAL_ONLY:
        assert report["chosen"] == "global_only"
    assert len(report["candidates"]) == len(candidate_policies()) - 1


def test_global_only_serves_the_global_threshold_plus_feedback() -> None:
    cfg = ThresholdConfig().with_learned(GLOBAL_ONLY)
    assert cfg.per_user is False
    calm = UserStats(n=500, mean=0.001, m2=0.0)
    assert threshold_for(calm, 0.1, cfg) == pytest.approx(0.1)
    calm.adj = -0.05  # an analyst's confirmed fraud still lowers the bar
    assert threshold_for(calm, 0.1, cfg) == pytest.approx(0.05)
    assert threshold_for(UserStats(n=500, mean=0.001), 0.1, ThresholdConfig()) < 0.1


def test_settings_can_refuse_the_learned_parameters() -> None:
    learned = {"per_user": True, "k": 5.0, "credibility_n": 20.0, "ignored": 1}
    assert ThresholdConfig().with_learned(learned).k == 5.0
    assert ThresholdConfig(learned=False, k=2.0).with_learned(learned).k == 2.0
    assert ThresholdConfig().with_learned(None) == ThresholdConfig()
