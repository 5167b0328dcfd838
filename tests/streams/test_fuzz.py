"""Property-based tests: hostile input never crashes, always gets one clear line."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contracts import DeadLetter, DecodeError, Transaction, decode_transaction
from streams.http_views import score_http
from streams.pipeline import RawMessage, dead_letter

VALID: dict[str, Any] = {
    "transaction_id": "t-1",
    "user_id": "u-1",
    "timestamp": 1767225600000,
    "amount": "12.5",
    "currency": "USD",
    "mcc": "5411",
    "channel": "online",
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def _one_line(message: str) -> None:
    assert message and "\n" not in message and len(message) < 400, message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    try:
        decode_transaction(raw)
    except DecodeError as exc:
        _one_line(str(exc))


@settings(max_examples=400, deadline=None)
@given(
    field=st.sampled_from([*sorted(VALID), "lat", "lon", "country", "merchant_id"]),
    value=json_values,
)
def test_any_value_in_any_field(field: str, value: Any) -> None:
    payload = json.dumps({**VALID, field: value}, allow_nan=True).encode()
    try:
        tx = decode_transaction(payload)
    except DecodeError as exc:
        _one_line(str(exc))
        return
    assert isinstance(tx, Transaction) and tx.amount > 0


@settings(max_examples=100, deadline=None)
@given(depth=st.integers(min_value=1, max_value=50_000))
def test_deep_json_is_bounded(depth: int) -> None:
    raw = b"[" * depth + b"]" * depth
    try:
        decode_transaction(raw)
    except DecodeError as exc:
        _one_line(str(exc))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_dead_letters_keep_the_original_bytes(raw: bytes) -> None:
    letter = DeadLetter.model_validate_json(
        dead_letter(RawMessage(raw, "transactions", 3, 42, 0.0), "some reason")
    )
    back = (
        base64.b64decode(letter.raw)
        if letter.raw_encoding == "base64"
        else letter.raw.encode("utf-8")
    )
    assert back == raw and letter.partition == 3 and letter.offset == 42


class _NotStarted:
    """A service that has not loaded its model yet: validation must still answer."""

    runtime = None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=1000), json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())
    )
)
def test_score_endpoint_answers_4xx_or_503_never_raises(body: bytes) -> None:
    status, payload = asyncio.run(score_http(_NotStarted(), body))  # type: ignore[arg-type]
    assert status in (400, 413, 503)
    _one_line(payload["error"])


def test_score_endpoint_limits_batch_size() -> None:
    body = json.dumps([VALID] * 1001).encode()
    status, payload = asyncio.run(score_http(_NotStarted(), body))  # type: ignore[arg-type]
    assert status == 413 and "at most" in payload["error"]
