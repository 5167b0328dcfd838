"""Topic contracts (DESIGN §2) as pydantic models, and the one decoder for raw input.

Validation happens here, at the boundary, so everything downstream can trust its input.
A decode failure is a ``DecodeError`` whose message is one line naming the field and
the problem; that line becomes the ``error`` of a dead letter.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from features.errors import RiskstreamError
from features.iso_codes import ISO_3166_ALPHA2, ISO_4217

CHANNELS: tuple[str, ...] = ("card_present", "contactless", "online", "atm")
Channel = Literal["card_present", "contactless", "online", "atm"]

#: Hard limits that keep a hostile payload from costing unbounded memory or CPU.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ID_LENGTH = 128
MAX_AMOUNT = Decimal("1000000000")
#: Card transactions outside this range are treated as corrupt, not as history or future.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)


class DecodeError(RiskstreamError, ValueError):
    """Raw input that is not a valid transaction; ``str()`` is one line."""

    http_status = 400


def _parse_timestamp(value: Any) -> datetime:
    """RFC 3339 string or epoch milliseconds (int, float or digit string) → aware UTC."""
    if isinstance(value, bool):
        raise ValueError("must be RFC 3339 or epoch milliseconds, not a boolean")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        ms = float(value)
        if not math.isfinite(ms):
            raise ValueError("must be a finite number of epoch milliseconds")
        if not (MIN_EVENT_TIME.timestamp() * 1000 <= ms < MAX_EVENT_TIME.timestamp() * 1000):
            raise ValueError("epoch milliseconds out of range 2000-01-01..2100-01-01")
        return datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        if len(value) > 40:
            raise ValueError("too long for an RFC 3339 timestamp")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("not RFC 3339 (e.g. 2026-01-31T12:00:00Z) or epoch ms") from None
    else:
        raise ValueError("must be an RFC 3339 string or epoch milliseconds")
    if parsed.tzinfo is None:
        raise ValueError("RFC 3339 timestamp needs a time zone offset (e.g. Z)")
    parsed = parsed.astimezone(UTC)
    if not (MIN_EVENT_TIME <= parsed < MAX_EVENT_TIME):
        raise ValueError("out of range 2000-01-01..2100-01-01")
    return parsed


def _parse_amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("must be a decimal number or a numeric string")
    if isinstance(value, str) and len(value) > 32:
        raise ValueError("too many characters for an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be finite")
    if amount <= 0:
        raise ValueError("must be > 0")
    if amount > MAX_AMOUNT:
        raise ValueError(f"must be <= {MAX_AMOUNT}")
    return amount


def _parse_mcc(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError("must be a 4-digit merchant category code")
    if isinstance(value, int) and 0 <= value <= 9999:
        return f"{value:04d}"
    if isinstance(value, str) and len(value) == 4 and value.isdigit() and value.isascii():
        return value
    raise ValueError("must be a 4-digit merchant category code")


EventTime = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "RFC 3339 with offset"},
                {"type": "integer", "description": "epoch milliseconds"},
            ]
        }
    ),
]
Amount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_AMOUNT)},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*$", "maxLength": 32},
            ],
            "description": "decimal amount > 0 in the transaction currency",
        }
    ),
]
Mcc = Annotated[
    str,
    BeforeValidator(_parse_mcc),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]{4}$"},
                {"type": "integer", "minimum": 0, "maximum": 9999},
            ],
            "description": "ISO 18245 merchant category code",
        }
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class Transaction(BaseModel):
    """A card transaction on the ``transactions`` topic (unknown fields kept, ignored)."""

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True)

    transaction_id: Id
    user_id: Id
    timestamp: EventTime
    amount: Amount
    currency: Annotated[str, Field(pattern="^[A-Za-z]{3}$", description="ISO 4217 code")]
    mcc: Mcc
    channel: Channel
    merchant_id: Id | None = None
    country: Annotated[str, Field(pattern="^[A-Za-z]{2}$")] | None = Field(
        None, description="ISO 3166-1 alpha-2 code"
    )
    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    lon: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)
    device_id: Id | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        code = value.upper()
        if code not in ISO_4217:
            raise ValueError("not an ISO 4217 currency code")
        return code

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        if code not in ISO_3166_ALPHA2:
            raise ValueError("not an ISO 3166 alpha-2 country code")
        return code

    @property
    def epoch_ms(self) -> int:
        """Event time as integer epoch milliseconds (the sequence store's clock)."""
        return round(self.timestamp.timestamp() * 1000)


class LabelledTransaction(Transaction):
    """A transaction in a training/evaluation file: adds the label (never sent to Kafka)."""

    is_fraud: Literal[0, 1]
    scenario: str | None = None


class Reason(BaseModel):
    """One feature's signed contribution to a score, in words."""

    model_config = ConfigDict(frozen=True)

    feature: str
    contribution: float
    text: str


class SimilarCase(BaseModel):
    """A confirmed fraud case whose history embedding is close to this one."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    similarity: float


class ScoreRecord(BaseModel):
    """Every decision, on the ``scores`` topic (audit trail)."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    transaction_id: str
    user_id: str
    score: float = Field(ge=0, le=1)
    threshold: float = Field(ge=0, le=1)
    is_alert: bool
    model_version: str
    similar_cases: list[SimilarCase] = Field(default_factory=list)
    event_time: datetime
    scored_at: datetime
    latency_ms: float
    sequence_length: int = Field(ge=0)
    shadow_score: float | None = None
    shadow_model_version: str | None = None
    #: the merchant's and the device's profile as this event found it (before it was
    #: added): ``{"merchant": {"tx_24h": ..., "fraud_7d": ...}, "device": {...}}``, one
    #: entry per id the transaction carried; absent when the worker keeps no profiles.
    #: Counters are decayed counts (docs/MODEL.md, Entity risk); labels exact counts.
    entity: dict[str, dict[str, float]] | None = None


class AlertContext(BaseModel):
    """What an analyst needs to triage an alert without another lookup.

    Only fields of the incoming transaction that are not card data: no PAN exists in the
    contract, and device ids and coordinates stay out of alerts on purpose.
    """

    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str
    mcc: str
    channel: str
    merchant_id: str | None = None
    country: str | None = None


class AlertRecord(ScoreRecord):
    """A decision at or over the user's threshold, on the ``alerts`` topic."""

    reasons: list[Reason]
    context: AlertContext | None = None


class DeadLetter(BaseModel):
    """Input that could not be decoded, on ``transactions.dlq``."""

    model_config = ConfigDict(frozen=True)

    error: str
    raw: str
    raw_encoding: Literal["utf-8", "base64"]
    topic: str
    partition: int
    offset: int
    at: datetime


class Feedback(BaseModel):
    """An analyst's label for a scored transaction, on ``feedback``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    transaction_id: Id
    user_id: Id
    label: Literal["fraud", "legit"]
    analyst: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
    at: EventTime
    #: who confirmed it: an analyst reviewing an alert (minutes-hours later), a chargeback
    #: (days-weeks later, often for fraud nobody alerted on), or another bank system.
    #: Optional, so producers written before it existed stay valid.
    source: Literal["analyst", "chargeback", "bank"] = "analyst"


def describe_validation_error(exc: ValidationError) -> str:
    """First problem of a pydantic error as ``field 'x': problem`` on one line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "payload"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        text = f"field '{loc}' is required"
    else:
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        text = f"field '{loc}': {msg} (got {shown})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join((text + more).split())


def decode_json_object(raw: bytes | str) -> dict[str, Any]:
    """Bytes → JSON object, bounded in size and depth, with one-line errors."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload is {len(raw)} bytes, over the {MAX_PAYLOAD_BYTES} limit")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise DecodeError(f"payload is not UTF-8 (byte {exc.start})") from None
    try:
        data = _JSON.decode(text)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


#: one decoder for every payload: ``json.loads(..., parse_constant=...)`` builds a new
#: decoder and scanner per call, which cost as much as the parse itself
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def decode_transaction(raw: bytes | str | dict[str, Any]) -> Transaction:
    """Raw bytes (or an already-parsed object) → ``Transaction`` or ``DecodeError``."""
    data = raw if isinstance(raw, dict) else decode_json_object(raw)
    try:
        return Transaction.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc)) from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None


def decode_feedback(raw: bytes | str) -> Feedback:
    """Raw bytes → ``Feedback`` or ``DecodeError``."""
    data = decode_json_object(raw)
    try:
        return Feedback.model_validate(data)
    except ValidationError as exc:
        raise DecodeError(describe_validation_error(exc)) from None


CONTRACT_MODELS: dict[str, type[BaseModel]] = {
    "transaction": Transaction,
    "labelled_transaction": LabelledTransaction,
    "score": ScoreRecord,
    "alert": AlertRecord,
    "dead_letter": DeadLetter,
    "feedback": Feedback,
}
