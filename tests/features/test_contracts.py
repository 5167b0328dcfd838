"""Decoding: every required field missing or malformed gives one line naming it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from features.contracts import (
    AlertRecord,
    DecodeError,
    decode_feedback,
    decode_transaction,
)
from features.schemas import render, schemas

VALID = {
    "transaction_id": "tx-1",
    "user_id": "u-1",
    "timestamp": "2026-01-31T12:00:00Z",
    "amount": "12.50",
    "currency": "USD",
    "mcc": "5411",
    "channel": "contactless",
}
REQUIRED = list(VALID)


def _decode(payload: dict[str, object]) -> object:
    return decode_transaction(json.dumps(payload).encode())


def test_valid_event_decodes_with_decimal_amount() -> None:
    tx = _decode(VALID)
    assert tx.amount == Decimal("12.50")  # type: ignore[attr-defined]
    assert tx.timestamp == datetime(2026, 1, 31, 12, tzinfo=UTC)  # type: ignore[attr-defined]


def test_both_timestamp_forms_agree() -> None:
    rfc = _decode(VALID)
    ms = _decode({**VALID, "timestamp": 1769860800000})
    offset = _decode({**VALID, "timestamp": "2026-01-31T13:00:00+01:00"})
    assert rfc.epoch_ms == ms.epoch_ms == offset.epoch_ms == 1769860800000  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", REQUIRED)
def test_each_missing_required_field_is_named(field: str) -> None:
    payload = {k: v for k, v in VALID.items() if k != field}
    with pytest.raises(DecodeError) as err:
        _decode(payload)
    assert f"field '{field}' is required" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("transaction_id", "", "at least 1 character"),
        ("transaction_id", 123, "string"),
        ("user_id", "x" * 500, "at most 128"),
        ("timestamp", "yesterday", "RFC 3339"),
        ("timestamp", "2026-01-31T12:00:00", "time zone"),
        ("timestamp", 12, "out of range"),
        ("timestamp", "1900-01-01T00:00:00Z", "out of range"),
        ("timestamp", True, "boolean"),
        ("amount", "-5", "> 0"),
        ("amount", 0, "> 0"),
        ("amount", "abc", "decimal"),
        ("amount", "1e400", "<="),
        ("amount", [1], "decimal"),
        ("currency", "XXX", "ISO 4217"),
        ("currency", "US", "pattern"),
        ("mcc", "54111", "4-digit"),
        ("mcc", "ab12", "4-digit"),
        ("channel", "telepathy", "card_present"),
    ],
)
def test_each_malformed_field_is_named(field: str, value: object, needle: str) -> None:
    with pytest.raises(DecodeError) as err:
        _decode({**VALID, field: value})
    message = str(err.value)
    assert message.startswith(f"field '{field}'"), message
    assert needle in message
    assert "\n" not in message


def test_optional_fields_are_validated() -> None:
    with pytest.raises(DecodeError, match="field 'lat'"):
        _decode({**VALID, "lat": 91})
    with pytest.raises(DecodeError, match="field 'country'"):
        _decode({**VALID, "country": "ZZ"})


def test_unknown_fields_are_kept_and_ignored() -> None:
    tx = _decode({**VALID, "terminal_id": "T9", "nested": {"a": 1}})
    assert tx.model_extra == {"terminal_id": "T9", "nested": {"a": 1}}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"amount": NaN}', "NaN"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b" " * 70_000, "over the"),
    ],
)
def test_garbage_bytes(raw: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode_transaction(raw)


def test_feedback_decodes() -> None:
    fb = decode_feedback(b'{"transaction_id":"t","user_id":"u","label":"fraud","at":1769860800000}')
    assert fb.label == "fraud"
    with pytest.raises(DecodeError, match="label"):
        decode_feedback(b'{"transaction_id":"t","user_id":"u","label":"maybe","at":1769860800000}')


def test_alert_round_trips_json() -> None:
    alert = AlertRecord(
        alert_id="a",
        transaction_id="t",
        user_id="u",
        score=0.9,
        threshold=0.5,
        is_alert=True,
        model_version="m1",
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        scored_at=datetime(2026, 1, 1, tzinfo=UTC),
        latency_ms=3.2,
        sequence_length=4,
        reasons=[{"feature": "amount", "contribution": 0.3, "text": "amount 14x median"}],
    )
    assert AlertRecord.model_validate_json(alert.model_dump_json()) == alert


def test_committed_schemas_match_models() -> None:
    folder = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for name, schema in schemas().items():
        path = folder / f"{name}.json"
        assert path.exists(), f"run python -m features.schemas ({path} missing)"
        assert path.read_text() == render(schema), f"{path} is stale: python -m features.schemas"


def test_schema_accepts_what_the_decoder_accepts() -> None:
    import jsonschema

    schema = schemas()["transaction"]
    jsonschema.validate({**VALID, "timestamp": 1769860800000, "mcc": 5411}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "channel": "telepathy"}, schema)


def test_feedback_source_is_optional_and_closed() -> None:
    from features.contracts import DecodeError, decode_feedback

    base = {"transaction_id": "t1", "user_id": "u1", "label": "fraud", "at": 1767225600000}
    assert decode_feedback(json.dumps(base)).source == "analyst"  # written before it existed
    late = decode_feedback(json.dumps({**base, "source": "chargeback"}))
    assert late.source == "chargeback"
    with pytest.raises(DecodeError, match="source"):
        decode_feedback(json.dumps({**base, "source": "rumour"}))
