"""The full-size soak in CI: 20,000 valid + 10,000 fuzzed events, a Redis outage and a SIGKILL.

It runs on its own embedded stack (it stops that stack's Redis), takes about a minute on a
2-core machine, and prints the counts that docs/RELIABILITY.md records.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import alert_agreement, run_soak


@pytest.mark.integration
@pytest.mark.slow
def test_soak_20k_valid_10k_fuzzed_with_faults_loses_nothing() -> None:
    counts = run_soak(20_000, 10_000)
    print("soak counts:", counts)
    assert counts["valid_in"] == 20_000
    assert counts["lost"] == 0 and counts["scored"] == 20_000
    assert counts["valid_in_dlq"] == 0
    assert counts["dead_letters"] >= 10_000  # every fuzzed event (replays may repeat a few)
    assert counts["alerted_not_over"] == 0 and counts["over_not_alerted"] == 0
    assert counts["sequences_with_duplicates"] == 0


def test_alert_agreement_compares_the_sets_not_their_sizes() -> None:
    decisions = [
        {"transaction_id": "a", "is_alert": True},
        {"transaction_id": "b", "is_alert": False},
    ]
    counts = alert_agreement(decisions, [{"transaction_id": "b"}])  # same size, wrong one
    assert counts["alert_transactions"] == counts["over_threshold"] == 1
    assert counts["alerted_not_over"] == 1 and counts["over_not_alerted"] == 1
    ok = alert_agreement(decisions, [{"transaction_id": "a"}, {"transaction_id": "a"}])
    assert ok["alerted_not_over"] == ok["over_not_alerted"] == 0
