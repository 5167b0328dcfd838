"""``train``, ``refit`` and ``evaluate``: build a model artifact, adapt one to a bank's
labelled history without training, and measure either on held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("train")(train_cmd)
    app.command("refit")(refit_cmd)
    app.command("evaluate")(evaluate_cmd)


def _require_train_extra() -> None:
    try:
        import lightgbm  # noqa: F401
        import onnxmltools  # noqa: F401
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        from streams.errors import MissingExtraError

        raise MissingExtraError(
            "training needs the train extra: pip install torch==2.13.0 && "
            "pip install 'riskstream[train]'"
        ) from None


def _mapping(spec: str | None) -> Any:
    """The ``--map`` mapping (a preset or a YAML file), or None."""
    if spec is None:
        return None
    from features.column_mapping import load_mapping

    return load_mapping(spec)


_LABEL_DELAY_HELP = (
    "When labels reach the bank in the replay that builds merchant/device profiles: "
    "'mix' (analyst/chargeback mix, docs/MODEL.md), 'mix:0.5' (analyst share), or a "
    "fixed duration like 7d."
)


def _label_delay(text: str | None) -> Any:
    """The parsed ``--label-delay`` (a bad value is one clear line), or None."""
    if text is None:
        return None
    from features.label_delay import LabelDelay, LabelDelayError

    try:
        return LabelDelay.parse(text)
    except LabelDelayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--label-delay") from None


def train_cmd(
    data: list[Path] = typer.Option(..., "--data", "-d", help="Labelled file(s)."),
    out: Path = typer.Option(..., "--out", "-o", help="Artifact folder to write."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: int = typer.Option(12, min=1, help="Maximum epochs (early stopping may end sooner)."),
    max_minutes: float = typer.Option(14.0, min=0.1, help="Training time budget."),
    negative_rate: float = typer.Option(
        0.05, min=0.001, max=1.0, help="Share of legitimate events kept per epoch."
    ),
    max_history: int = typer.Option(256, min=1, max=4096, help="History length cap."),
    alert_rate: float = typer.Option(
        0.005, min=1e-5, max=0.5, help="Target alert rate for the global threshold."
    ),
    target_recall: float | None = typer.Option(
        None,
        min=0.01,
        max=1.0,
        help="Calibrate to catch this share of fraud with the fewest alerts (validation), "
        "instead of --alert-rate.",
    ),
    report: Path | None = typer.Option(None, help="Evaluation report folder (default OUT/report)."),
    column_map: str | None = typer.Option(
        None,
        "--map",
        help="Map a foreign layout onto the contract: a preset (finforge, tabformer, sparkov, "
        "paysim, ieee-cis) or a YAML mapping file (docs/MODEL.md, Bring your own data).",
    ),
    label_delay: str = typer.Option("mix", help=_LABEL_DELAY_HELP),
    entity: bool = typer.Option(
        True,
        "--entity/--no-entity",
        help="Merchant/device profiles as model inputs (when the data carries the ids).",
    ),
    architecture: str = typer.Option(
        "incremental",
        help="incremental (per-event cost independent of history length) or window "
        "(re-encodes the history window for every event); docs/MODEL.md compares them.",
    ),
    band: int = typer.Option(
        8, min=2, max=64, help="Incremental model: events each attention layer sees."
    ),
    tree_margin: float = typer.Option(
        0.002,
        min=0.0,
        max=0.1,
        help="Served validation PR-AUC the tree may give up for fewer trees (each tree "
        "costs every event; 0: keep every early-stopped round that helps).",
    ),
) -> None:
    """Train the Transformer+LSTM and the baseline; export and evaluate the artifact."""
    if architecture not in ("incremental", "window"):
        raise typer.BadParameter(
            f"{architecture!r}: choose incremental or window", param_hint="--architecture"
        )
    _require_train_extra()
    _label_delay(label_delay)
    import numpy as np

    from models.dataset import LabelledData
    from models.evaluate import REPORTED_PARTS, evaluate
    from models.export import TreePart, update_metrics, write_artifact
    from models.train import TrainConfig, fraud_case_embeddings, train
    from scoring.model_registry import data_fingerprint

    for path in data:
        if not path.exists():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--data")
    with console.status("reading labelled data"):
        dataset = LabelledData.from_files(data, _mapping(column_map))
    console.print(f"{len(dataset)} events, {int(dataset.labels.sum())} fraud")
    cfg = TrainConfig(
        seed=seed,
        epochs=epochs,
        max_minutes=max_minutes,
        negative_rate=negative_rate,
        max_history=max_history,
        target_alert_rate=alert_rate,
        target_recall=target_recall,
        label_delay=label_delay,
        entity_features=entity,
        architecture=architecture,
        band=band,
        tree_margin=tree_margin,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("epoch 1", total=1, info="")

        def on_progress(event: str, v: dict[str, float]) -> None:
            if event == "step":
                bar.update(
                    task,
                    description=f"epoch {int(v['epoch'])}",
                    total=v["steps"],
                    completed=v["step"],
                    info=f"loss {v['loss']:.4f}",
                )
            elif event == "epoch":
                console.print(
                    f"epoch {int(v['epoch'])}: loss {v['loss']:.4f} "
                    f"val PR-AUC {v['val_pr_auc']:.4f} ({v['minutes']:.1f} min)"
                )
            elif event == "baseline":
                bar.update(task, description="baseline (gradient-boosted trees)", info="")

        outcome = train(dataset, cfg, on_progress)
    train_idx, val_idx, test_idx = outcome.split_index  # type: ignore[misc]
    fraud_idx = train_idx[dataset.labels[train_idx] == 1][-2000:]
    cases = fraud_case_embeddings(
        outcome.model, dataset, outcome.spec, fraud_idx, layout=outcome.layout
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tree = None
    if outcome.baseline is not None and outcome.tree_parity_rows is not None:
        tree = TreePart(
            outcome.baseline,
            outcome.tree_parity_rows,
            outcome.combination,
            outcome.combination_report,
            {
                "transformer_lstm": float(outcome.network_threshold),  # type: ignore[arg-type]  # set with the baseline
                "baseline": float(outcome.baseline_threshold),  # type: ignore[arg-type]
            },
        )
    write_artifact(
        outcome.model,
        outcome.spec,
        out,
        outcome.threshold,
        fraud_cases=(dataset.transaction_ids[fraud_idx].astype(str), cases),
        case_patterns=np.array([p or "" for p in dataset.scenario[fraud_idx]], dtype=str),
        training={
            "config": cfg.to_json(),
            "history": outcome.history,
            "seconds": outcome.seconds,
            "files": [str(p) for p in data],
            # the registry's fingerprint of the training data (content, not names)
            "data_fingerprint": data_fingerprint(data),
            "events": len(dataset),
            "split": [int(train_idx.size), int(val_idx.size), int(test_idx.size)],
        },
        tree=tree,
    )
    console.print(f"artifact written to {out} (trained in {outcome.seconds / 60:.1f} min)")
    if tree is not None:
        picked = outcome.combination_report
        console.print(
            f"served decision: {picked['chosen']} (validation PR-AUC "
            f"{picked['validation_pr_auc']:.4f}; transformer_lstm "
            f"{picked['candidates']['transformer_lstm']['validation_pr_auc']:.4f}, baseline "
            f"{picked['candidates']['baseline']['validation_pr_auc']:.4f})"
        )
    if outcome.spec.entity:
        console.print(
            f"entity features: {', '.join(dataset.entity_kinds_present())} "
            f"(labels replayed: {dataset.label_delay.describe()})"  # type: ignore[union-attr]  # set with the features
        )
    else:
        console.print(
            "entity features: absent"
            + ("" if entity else " (--no-entity)")
            + ("" if dataset.entity_kinds_present() else " (no merchant_id/device_id in data)")
        )
    from models.threshold_learning import learn_for_artifact

    with console.status(f"learning per-user thresholds on {val_idx.size} validation events"):
        learned = learn_for_artifact(out, dataset, np.asarray(val_idx))
    console.print(
        f"threshold policy: {learned['chosen']} (false positives at equal alert volume on "
        f"validation {learned['false_positive_change']:+.1%} vs one global threshold)"
    )
    from models.case_purity import learn_for_artifact as learn_case_display

    cases_report = learn_case_display(out, dataset, np.asarray(val_idx))
    if cases_report["measured"]:
        console.print(
            f"similar cases: {cases_report['purity']:.2f} of the 3 nearest share the fraud's "
            f"pattern vs {cases_report['random']:.2f} for random cases on validation; "
            f"showing {cases_report['shown']}"
        )
    else:
        console.print("similar cases: purity not measured (no fraud pattern in the data)")
    with console.status("evaluating on the held-out (latest) period"):
        # every test event up to a million, so the per-user threshold replay can run
        results = evaluate(
            out,
            dataset,
            report or out / "report",
            index=np.asarray(test_idx),
            max_negatives=1_000_000,
        )
    parts = {k: results[k] for k in REPORTED_PARTS if k in results}
    update_metrics(out, {"test": parts})
    typer.echo(json.dumps(parts, indent=2))


def refit_cmd(
    data: list[Path] = typer.Option(..., "--data", "-d", help="Labelled file(s)."),
    out: Path = typer.Option(..., "--out", "-o", help="Artifact folder to write (replaced)."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Artifact (default: packaged)."),
    holdout: float = typer.Option(
        0.15, min=0.01, max=0.9, help="Latest share of event time kept out and evaluated."
    ),
    alert_rate: float | None = typer.Option(
        None, min=1e-6, max=1.0, help="Alert on this share of events (default: the model's)."
    ),
    target_recall: float | None = typer.Option(
        None, min=0.01, max=1.0, help="Or catch this share of fraud with the fewest alerts."
    ),
    column_map: str | None = typer.Option(
        None, "--map", help="A preset or a YAML mapping file, as for train and evaluate."
    ),
    label_delay: str | None = typer.Option(
        None, help=_LABEL_DELAY_HELP + " Default: the model's training delay."
    ),
    retrain_tree: bool = typer.Option(
        False,
        "--retrain-tree",
        help="Also train the tree part again on this data (minutes, no network training): "
        "fitted on the earlier part of the fit period, chosen with the network on the later "
        "--choice share.",
    ),
    choice: float = typer.Option(
        0.15,
        min=0.01,
        max=0.9,
        help="With --retrain-tree: the share of event time, just before the held-out period, "
        "on which the combination and thresholds are chosen.",
    ),
    tree_margin: float = typer.Option(
        0.002,
        min=0.0,
        max=0.1,
        help="With --retrain-tree: served PR-AUC the tree may give up for fewer trees.",
    ),
) -> None:
    """Choose an artifact's served decision and thresholds again on your labelled history,
    without training the network; --retrain-tree also fits a new tree (docs/MODEL.md,
    Refit)."""
    _require_train_extra()
    delay = _label_delay(label_delay)
    from models.baseline import TreeFit
    from models.dataset import LabelledData
    from models.refit import RefitConfig, RefitError, refit
    from scoring.artifact import load_artifact

    for path in data:
        if not path.exists():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--data")
    load_artifact(model)  # a bad artifact is one line before the data is read
    dataset = LabelledData.from_files(data, _mapping(column_map))
    cfg = RefitConfig(
        holdout=holdout,
        target_alert_rate=alert_rate,
        target_recall=target_recall,
        retrain_tree=retrain_tree,
        choice=choice,
        tree=TreeFit(margin=tree_margin),
    )
    try:
        with console.status(f"scoring {len(dataset)} events and fitting the served decision"):
            summary = refit(model, out, dataset, cfg, delay)
    except RefitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    held = summary["held_out"]
    console.print(
        f"artifact written to {out} ({summary['model_version']}, from {summary['from']}): "
        f"served decision {summary['served_decision']}, held-out PR-AUC "
        f"{held['refit']['served']['pr_auc']:.4f} (before {held['source']['served']['pr_auc']:.4f})"
    )
    if "retrained_tree" in summary:
        rounds = summary["retrained_tree"]["rounds"]
        console.print(
            f"tree trained again: {rounds['rounds']} of {rounds['trained_rounds']} rounds kept "
            f"(served PR-AUC within {rounds['margin']} of all of them on the choice period)"
        )
    for warning in summary["warnings"]:
        console.print(f"[yellow]note:[/yellow] {warning}")
    typer.echo(json.dumps(summary, indent=2))


def evaluate_cmd(
    model: Path | None = typer.Option(None, "--model", "-m", help="Artifact (default: packaged)."),
    data: list[Path] = typer.Option(..., "--data", "-d", help="Labelled file(s)."),
    out: Path = typer.Option(Path("evaluation"), "--out", "-o", help="Report folder."),
    max_negatives: int = typer.Option(200_000, min=1000, help="Legit events scored at most."),
    column_map: str | None = typer.Option(
        None,
        "--map",
        help="Map a foreign layout onto the contract: a preset (finforge, tabformer, sparkov, "
        "paysim, ieee-cis) or a YAML mapping file (docs/MODEL.md, Bring your own data).",
    ),
    history: list[Path] = typer.Option(
        [],
        "--history",
        help="Earlier labelled file(s) replayed first, unscored: card histories and entity "
        "profiles warm, as in a worker that has been running.",
    ),
    label_delay: str | None = typer.Option(
        None, help=_LABEL_DELAY_HELP + " Default: the model's training delay."
    ),
) -> None:
    """Evaluate a model artifact and its baseline on any labelled file."""
    _require_train_extra()
    delay = _label_delay(label_delay)
    import numpy as np

    from models.dataset import LabelledData
    from models.evaluate import REPORTED_PARTS, evaluate
    from scoring.artifact import DEFAULT_ARTIFACT

    for hint, paths in (("--data", data), ("--history", history)):
        for path in paths:
            if not path.exists():
                raise typer.BadParameter(f"{path}: no such file", param_hint=hint)
    dataset = LabelledData.from_files([*history, *data], _mapping(column_map))
    index = np.flatnonzero(dataset.source >= len(history))  # type: ignore[operator]  # from_files sets it
    with console.status(f"scoring {index.size} events"):
        results = evaluate(
            model or DEFAULT_ARTIFACT,
            dataset,
            out,
            index=index,
            max_negatives=max_negatives,
            label_delay=delay,
        )
    console.print(f"report written to {out / 'report.md'}")
    typer.echo(
        json.dumps(
            {k: results[k] for k in (*REPORTED_PARTS, "per_scenario_recall") if k in results},
            indent=2,
        )
    )
