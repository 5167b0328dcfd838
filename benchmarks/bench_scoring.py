"""Scoring latency (warm vs cold cache) and throughput per batch size, on this machine.

    python -m benchmarks.bench_scoring [--model DIR] [--repeat 200]

Model only (featurized inputs prepared up front): what ONNX Runtime costs per batch.
"warm" = history embedding cached, only the head runs; "cold" = encoder + head (for an
incremental artifact: the state rebuilt from the window, what a cache miss costs);
"steady" = what a returning card costs the model per event once its cache entry is
warm: the window model re-encodes the grown history, the incremental model advances
its state one step; both then run the head. ``steady_by_history`` splits that by
history length: flat for the incremental model, growing for the window model.

``--against DIR`` also times a second artifact on the same batches, alternating rounds
(``steady_against``): e.g. the network-alone copy from ``benchmarks.part_artifact``, for
what the served decision's tree adds per event. It reports the model alone and, beside
it, the model with the featurization the worker runs for it (``scoring.scorer``): a model
with a tree also needs the tree's history aggregates, which the worker computes from the
window while featurizing, so the model alone leaves part of the tree's cost out.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.common import report
from features.current_features import current_features
from features.featurize import featurize_windows, windows_from_sorted
from features.label_delay import LabelDelay
from models.dataset import LabelledData
from scoring.artifact import load_artifact
from scoring.incremental_state import advance
from scoring.onnx_model import OnnxRiskModel
from scoring.scorer import encode_bucketed


def _pct(values: list[float]) -> tuple[float, float]:
    arr = np.array(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--providers", default="CPUExecutionProvider")
    ap.add_argument("--batches", default="1,8,32,128,512", help="Batch sizes to time.")
    ap.add_argument(
        "--io-binding", default="auto", choices=("auto", "always"), help="ORT IO binding."
    )
    ap.add_argument("--users", type=int, default=800, help="Simulated card holders.")
    ap.add_argument(
        "--against", default=None, help="A second artifact, timed alternately (steady path)."
    )
    ap.add_argument("--rounds", type=int, default=6, help="Alternating rounds for --against.")
    ap.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="ORT threads per session; 0 = ORT decides. The worker runs 1 "
        "(model.intra_op_threads), one process per core.",
    )
    args = ap.parse_args()
    from features.labelled_files import write_table
    from scoring.onnx_model import OnnxModelConfig
    from streams.devtools.simulator import SimulatorConfig, simulate

    artifact = load_artifact(args.model)
    config = OnnxModelConfig(
        providers=tuple(args.providers.split(",")),
        io_binding=args.io_binding,
        intra_op_threads=args.intra_op_threads,
    )
    model = OnnxRiskModel(artifact, config).load()
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "bench.parquet"
    write_table(simulate(SimulatorConfig(users=args.users, days=30, seed=3)), path)
    data = LabelledData.from_files([path])
    rng = np.random.default_rng(0)
    spec = artifact.spec
    if spec.entity:  # the merchant/device inputs, as the worker's profiles would give them
        data.attach_entity(LabelDelay())
    late = np.flatnonzero(data.records["ts"] > np.quantile(data.records["ts"], 0.8))
    # batch 1: cold (encoder+head) vs warm (head only), realistic history lengths
    cold, warm = [], []
    for i in rng.choice(late, args.repeat):
        fb = data.features(np.array([i]), spec)
        t0 = time.perf_counter()
        emb = encode_bucketed(model, fb, np.arange(1))
        model.score(fb, embedding=emb)
        t1 = time.perf_counter()
        model.score(fb, embedding=emb)
        t2 = time.perf_counter()
        cold.append(t1 - t0)
        warm.append(t2 - t1)
    c50, c99 = _pct(cold)
    w50, w99 = _pct(warm)
    report(
        "scoring_latency_batch1",
        providers=model.providers(),
        cold_p50_ms=round(c50, 3),
        cold_p99_ms=round(c99, 3),
        warm_p50_ms=round(w50, 3),
        warm_p99_ms=round(w99, 3),
        mean_history=float(data.history_lengths(late, spec).mean()),
    )
    # throughput per batch size, encoder+head, length-bucketed
    for b in (int(x) for x in args.batches.split(",")):
        idx = rng.choice(late, b * max(1, 2048 // b))
        batches = [data.features(idx[s : s + b], spec) for s in range(0, idx.size, b)]
        t0 = time.perf_counter()
        for fb in batches:
            emb = encode_bucketed(model, fb, np.arange(len(fb)))
            model.score(fb, embedding=emb)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        for fb in batches:
            model.score(fb, embedding=np.zeros((len(fb), artifact.embedding_dim), np.float32))
        head = time.perf_counter() - t0
        t0 = time.perf_counter()
        for fb in batches:
            _steady(model, fb)
        steady = time.perf_counter() - t0
        report(
            "scoring_throughput",
            batch=b,
            providers=model.providers(),
            io_binding=args.io_binding,
            cold_sequences_per_s=round(idx.size / full),
            warm_sequences_per_s=round(idx.size / head),
            steady_sequences_per_s=round(idx.size / steady),
        )
    lengths = data.history_lengths(late, spec)
    by_history = {}
    for lo, hi in ((1, 10), (25, 35), (50, spec.max_history)):
        pool = late[(lengths >= lo) & (lengths <= hi)]
        if pool.size < 32:
            continue
        batches = [data.features(rng.choice(pool, 32), spec) for _ in range(40)]
        t0 = time.perf_counter()
        for fb in batches:
            _steady(model, fb)
        by_history[f"{lo}-{hi}"] = round(40 * 32 / (time.perf_counter() - t0))
    report(
        "steady_by_history",
        architecture="incremental" if artifact.incremental else "window",
        batch=32,
        sequences_per_s=by_history,
    )
    if args.against:
        other = OnnxRiskModel(load_artifact(args.against), config).load()
        for b in (int(x) for x in args.batches.split(",")):
            idx = rng.choice(late, b * max(1, 1024 // b))
            batches = [data.features(idx[s : s + b], spec) for s in range(0, idx.size, b)]
            windows = [_window_inputs(data, idx[s : s + b], spec) for s in range(0, idx.size, b)]
            times = _alternate({"model": model, "against": other}, batches, windows, args.rounds)
            per_event = {k: float(np.median(v)) * 1e6 / idx.size for k, v in times.items()}
            report(
                "steady_against",
                batch=b,
                model=model.version,
                against=other.version,
                model_us_per_event=round(per_event["model"], 1),
                against_us_per_event=round(per_event["against"], 1),
                ratio_model_over_against=round(per_event["model"] / per_event["against"], 3),
                ratio_per_round=_ratios(times["model"], times["against"]),
                served_us_per_event=round(per_event["model served"], 1),
                against_served_us_per_event=round(per_event["against served"], 1),
                ratio_served_over_against=round(
                    per_event["model served"] / per_event["against served"], 3
                ),
                ratio_served_per_round=_ratios(times["model served"], times["against served"]),
            )


def _alternate(
    models: dict[str, OnnxRiskModel], batches: list[Any], windows: list[Any], rounds: int
) -> dict[str, list[float]]:
    """Seconds for the steady path over ``batches`` (the model alone) and over ``windows``
    (featurized as the worker does, then the model: ``NAME served``), per model and round;
    the order flips every round, so the host's drift falls on both sides alike."""
    times: dict[str, list[float]] = {}
    for r in range(rounds):
        for name in list(models)[:: 1 if r % 2 == 0 else -1]:
            model = models[name]
            t0 = time.perf_counter()
            for fb in batches:
                _steady(model, fb)
            t1 = time.perf_counter()
            for win, entity in windows:
                _steady(model, _served_features(model, win, entity))
            t2 = time.perf_counter()
            times.setdefault(name, []).append(t1 - t0)
            times.setdefault(f"{name} served", []).append(t2 - t1)
    return times


def _ratios(model: list[float], against: list[float]) -> list[float]:
    return [round(a / o, 3) for a, o in zip(model, against, strict=True)]


def _window_inputs(data: LabelledData, index: np.ndarray, spec: Any) -> tuple[Any, Any]:
    """The events' windows and merchant/device inputs, as the worker holds them before
    featurizing."""
    win = windows_from_sorted(data.records, data.user_codes, index, spec)
    return win, None if data.entity is None else data.entity[index]


def _served_features(model: OnnxRiskModel, win: Any, entity: Any) -> Any:
    """What ``scoring.scorer.score_batch`` featurizes for ``model``: the current event
    (with the tree's aggregates when it has a tree) for an incremental model, the whole
    window for a window model."""
    spec = model.artifact.spec
    if model.artifact.incremental:
        return current_features(win, spec, entity, with_aggregates=model.tree is not None)
    return featurize_windows(win, spec, entity=entity)


def _steady(model: OnnxRiskModel, fb: Any) -> None:
    """One returning card's model work per event, for a batch (see the module doc)."""
    if model.artifact.incremental:
        lay = model.state_layout
        _, emb = advance(
            model.step, lay, lay.empty(len(fb)), fb.cur_num, fb.cur_mcc, fb.cur_channel
        )
    else:
        emb = encode_bucketed(model, fb, np.arange(len(fb)))
    model.score(fb, embedding=emb)


if __name__ == "__main__":
    main()
