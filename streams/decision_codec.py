"""Decisions as the records and bytes published on ``scores`` and ``alerts``.

The bytes are what ``ScoreRecord``/``AlertRecord.model_dump_json()`` give, serialized
straight from the fields with pydantic-core, because the worker publishes every decision
(the cost is in docs/BENCHMARKS.md). A test keeps them byte-equal to the records' own
serialization. The records are built with ``model_construct``: every value came from the
scorer (probabilities, clipped thresholds, validated input); tests validate what is
published.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from features.contracts import AlertContext, AlertRecord, ScoreRecord
from features.entity_profile import STATS
from scoring.decision import Decision


def entity_view(d: Decision) -> dict[str, dict[str, float]] | None:
    """The decision's profiles as the record carries them: one entry per id present."""
    if d.entity is None:
        return None
    rows = d.entity.tolist()
    out: dict[str, dict[str, float]] = {}
    if d.tx.merchant_id:
        out["merchant"] = dict(zip(STATS, rows[0], strict=True))
    if d.tx.device_id:
        out["device"] = dict(zip(STATS, rows[1], strict=True))
    return out


def score_fields(d: Decision) -> dict[str, Any]:
    """The fields of the ``scores`` record (alerts carry these and more)."""
    return {
        "alert_id": d.alert_id,
        "transaction_id": d.tx.transaction_id,
        "user_id": d.tx.user_id,
        "score": d.score,
        "threshold": d.threshold,
        "is_alert": d.is_alert,
        "model_version": d.model_version,
        "similar_cases": d.similar_cases,
        "event_time": d.tx.timestamp,
        "scored_at": d.scored_at,
        "latency_ms": d.latency_ms,
        "sequence_length": d.sequence_length,
        "shadow_score": d.shadow_score,
        "shadow_model_version": d.shadow_model_version,
        "entity": entity_view(d),
    }


def alert_fields(d: Decision) -> dict[str, Any]:
    """The fields of the ``alerts`` record: the score's, the reasons and the context."""
    tx = d.tx
    context = AlertContext(
        amount=tx.amount,
        currency=tx.currency,
        mcc=tx.mcc,
        channel=tx.channel,
        merchant_id=tx.merchant_id,
        country=tx.country,
    )
    return {**score_fields(d), "reasons": d.reasons, "context": context}


def score_record(d: Decision) -> ScoreRecord:
    return ScoreRecord.model_construct(**score_fields(d))


def alert_record(d: Decision) -> AlertRecord:
    return AlertRecord.model_construct(**alert_fields(d))


def score_json(d: Decision) -> bytes:
    return to_json(score_fields(d))


def alert_json(d: Decision) -> bytes:
    return to_json(alert_fields(d))
