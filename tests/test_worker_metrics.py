"""The benchmark's split of a phase from two scrapes of the worker's histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from benchmarks.worker_metrics import parse, phase_split


def test_a_phase_gets_the_batches_and_mean_of_its_own_observations_only() -> None:
    reg = CollectorRegistry()
    stage = Histogram("riskstream_stage_latency_ms", "", ["stage"], registry=reg)
    cache = Counter("riskstream_embedding_cache", "", ["outcome"], registry=reg)
    other = Histogram("unrelated_ms", "", registry=reg)
    stage.labels("score").observe(100.0)  # before the phase
    cache.labels("hit").inc(5)
    before = parse(generate_latest(reg).decode())
    for ms in (2.0, 4.0):
        stage.labels("score").observe(ms)
    stage.labels("publish").observe(1.5)
    cache.labels("hit").inc(3)
    other.observe(9.0)
    split = phase_split(before, parse(generate_latest(reg).decode()))
    assert split["riskstream_stage_latency_ms{score}"] == {"n": 2, "mean_ms": 3.0}
    assert split["riskstream_stage_latency_ms{publish}"] == {"n": 1, "mean_ms": 1.5}
    assert split["riskstream_embedding_cache{hit}"] == 3
    assert not any(k.startswith("unrelated") for k in split)
