"""POST /v1/score bodies: the three accepted forms, and one clear line for anything else."""

from __future__ import annotations

import json

import pytest

from streams.http_body import MAX_HTTP_ITEMS, BodyError, parse_score_body
from tests.streams.test_fuzz import VALID


def _parse(value: object) -> tuple[list[str], bool]:
    txs, dry = parse_score_body(json.dumps(value).encode())
    return [t.transaction_id for t in txs], dry


def test_the_three_forms() -> None:
    assert _parse(VALID) == (["t-1"], False)
    assert _parse({**VALID, "dry_run": True}) == (["t-1"], True)
    assert _parse([VALID, {**VALID, "transaction_id": "t-2"}]) == (["t-1", "t-2"], False)
    assert _parse({"transactions": [VALID], "dry_run": True}) == (["t-1"], True)


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        ({"transactions": [VALID], "dry_run": "yes"}, 400, "dry_run"),  # never scored for real
        ({**VALID, "dry_run": 1}, 400, "dry_run"),
        ({"transactions": []}, 400, "transactions"),
        ({"transactions": [VALID], "extra": 1}, 400, "extra"),
        ([VALID, 3], 400, "item 1: expected a JSON object"),
        ([{**VALID, "amount": "lots"}], 400, "item 0"),
        ([VALID] * (MAX_HTTP_ITEMS + 1), 413, "at most"),
        ("a string", 400, "expected a transaction"),
    ],
)
def test_what_is_refused_and_why(value: object, status: int, words: str) -> None:
    with pytest.raises(BodyError) as err:
        parse_score_body(json.dumps(value).encode())
    assert err.value.http_status == status and words in str(err.value)
    assert "\n" not in str(err.value)
