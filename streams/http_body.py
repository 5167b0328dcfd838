"""The body of ``POST /v1/score``, parsed by pydantic: one transaction, a list of them, or
``{"transactions": [...], "dry_run": bool}``.

The envelope is a model; each item is then decoded on its own with the contract's
``decode_transaction``, so an error names the item that is wrong.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from features.contracts import DecodeError, Transaction, decode_transaction
from features.errors import RiskstreamError

MAX_HTTP_BODY = 1 << 20
MAX_HTTP_ITEMS = 1000


class BodyError(RiskstreamError):
    """What is wrong with a request body, with the HTTP status to answer (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


class ScoreEnvelope(BaseModel):
    """``{"transactions": [...], "dry_run": false}``: the general form of the body."""

    model_config = ConfigDict(extra="forbid")

    transactions: list[Any] = Field(min_length=1)
    dry_run: StrictBool = False


def parse_score_body(raw: bytes) -> tuple[list[Transaction], bool]:
    """The transactions and the dry-run flag, or ``BodyError`` (400 or 413)."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise BodyError(400, f"body is not JSON: {_one_line(exc)}") from None
    if isinstance(value, dict) and "transactions" not in value:  # one bare transaction
        dry = value.pop("dry_run", False)
        value = {"transactions": [value], "dry_run": dry}
    elif isinstance(value, list):
        value = {"transactions": value}
    items = value.get("transactions") if isinstance(value, dict) else None
    if isinstance(items, list) and len(items) > MAX_HTTP_ITEMS:
        raise BodyError(413, f"at most {MAX_HTTP_ITEMS} transactions per request")
    try:
        body = ScoreEnvelope.model_validate(value)
    except ValidationError as exc:
        raise BodyError(
            400,
            f"expected a transaction, a non-empty list of them, or "
            f'{{"transactions": [...], "dry_run": bool}}: {_first_error(exc)}',
        ) from None
    txs = []
    for i, item in enumerate(body.transactions):
        if not isinstance(item, dict):
            raise BodyError(400, f"item {i}: expected a JSON object")
        try:
            txs.append(decode_transaction(item))
        except DecodeError as exc:
            raise BodyError(400, f"item {i}: {exc}") from None
    return txs, body.dry_run


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")
