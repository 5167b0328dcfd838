"""Pure unit tests of the console's state, filters, numbers, history rows and sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.events import RECORD_DTYPE, id_hash, pack_country
from streams.console.auth import ConsoleAuth, LoginError
from streams.console.case import history_rows, profile_rows
from streams.console.state import HOUR_MS, AlertFilter, ConsoleState


def _alert(i: int, score: float = 0.5, channel: str = "online", country: str = "US") -> bytes:
    return json.dumps(
        {
            "alert_id": f"a{i}",
            "transaction_id": f"t{i}",
            "user_id": f"u{i % 3}",
            "score": score,
            "threshold": 0.2,
            "context": {
                "amount": "10.00",
                "currency": "USD",
                "mcc": "5411",
                "channel": channel,
                "country": country,
            },
        }
    ).encode()


def test_queue_is_newest_first_filtered_deduplicated_and_bounded() -> None:
    st = ConsoleState(capacity=4)
    now = 10 * HOUR_MS
    st.add_alert(_alert(1, 0.3, "atm", "FR"), now)
    st.add_alert(_alert(2, 0.9), now + 1)
    assert st.add_alert(_alert(2, 0.9), now + 2) is None  # redelivered alert id
    assert st.add_alert(b"not json", now) is None
    assert [a["alert_id"] for a in st.queue(AlertFilter())] == ["a2", "a1"]
    assert [a["alert_id"] for a in st.queue(AlertFilter(min_score=0.5))] == ["a2"]
    assert [a["alert_id"] for a in st.queue(AlertFilter(channel="atm"))] == ["a1"]
    assert [a["alert_id"] for a in st.queue(AlertFilter(country="fr"))] == ["a1"]
    assert [a["alert_id"] for a in st.queue(AlertFilter(query="t2"))] == ["a2"]
    assert [a["alert_id"] for a in st.queue(AlertFilter(query="u1"))] == ["a1"]
    st.add_feedback(json.dumps({"transaction_id": "t2", "label": "fraud"}).encode(), now + 3)
    assert [a["alert_id"] for a in st.queue(AlertFilter(status="open"))] == ["a1"]
    reviewed = st.queue(AlertFilter(status="reviewed"))
    assert [a["alert_id"] for a in reviewed] == ["a2"] and reviewed[0]["review"]["label"] == "fraud"
    for i in range(3, 9):
        st.add_alert(_alert(i), now + i)
    assert len(st.alerts) == 4 and st.alert("a1") is None and st.alert("a8") is not None


def test_numbers_over_the_last_hour_and_day() -> None:
    st = ConsoleState()
    t0 = 100 * HOUR_MS
    st.add_scored(t0 - 3 * HOUR_MS, 100)  # older than an hour, within the day
    st.add_alert(_alert(1), t0 - 3 * HOUR_MS)
    st.add_scored(t0, 50)
    for i in (2, 3, 4, 5):
        st.add_alert(_alert(i), t0)
    st.add_feedback(json.dumps({"transaction_id": "t2", "label": "fraud"}).encode(), t0)
    st.add_feedback(json.dumps({"transaction_id": "t3", "label": "legit"}).encode(), t0)
    st.add_feedback(json.dumps({"transaction_id": "t1", "label": "fraud"}).encode(), t0)
    n = st.numbers(t0 + 1)
    assert n["hour"] == {
        "alerts": 4,
        "scored": 50,
        "alert_rate": 0.08,
        "reviewed": 2,
        "share_reviewed": 0.5,
        "confirmed_fraud": 1,
        "confirmed_share": 0.5,
    }
    assert n["day"]["alerts"] == 5 and n["day"]["scored"] == 150
    assert n["day"]["confirmed_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert ConsoleState().numbers(0)["hour"]["alert_rate"] is None  # nothing scored: no rate


async def test_subscribers_receive_alerts_and_reviews() -> None:
    st = ConsoleState()
    queue = st.subscribe()
    st.add_alert(_alert(1), 1)
    st.add_feedback(json.dumps({"transaction_id": "t1", "label": "legit"}).encode(), 2)
    assert (await queue.get())[0] == "alert"
    kind, data = await queue.get()
    assert kind == "review" and data["label"] == "legit"
    st.unsubscribe(queue)
    st.add_alert(_alert(2), 3)
    assert queue.empty()


def test_history_rows_mark_the_alerted_event_and_new_merchants() -> None:
    recs = np.zeros(3, dtype=RECORD_DTYPE)
    recs["ts"] = [1_700_000_000_000, 1_700_000_100_000, 1_700_000_200_000]
    recs["tx"] = [id_hash("a"), id_hash("b"), id_hash("c")]
    recs["amount"] = [5.0, 7.5, 900.0]
    recs["mcc"] = [5411, 5411, 5732]
    recs["channel"] = [0, 0, 2]
    recs["country"] = [pack_country("US"), pack_country("US"), pack_country("RO")]
    recs["merchant"] = [11, 11, 12]
    rows = history_rows(recs, "c")
    assert [r["current"] for r in rows] == [False, False, True]
    assert [r["new_merchant"] for r in rows] == [True, False, True]
    assert [r["new_country"] for r in rows] == [False, False, True]
    assert rows[2]["country"] == "RO" and rows[2]["mcc"] == "5732" and rows[2]["amount"] == 900.0


def test_sessions_need_the_token_when_one_is_set_and_cannot_be_forged() -> None:
    open_auth = ConsoleAuth.create(None)
    assert open_auth.analyst(open_auth.login("  Ana  Lyst ", None)) == "Ana Lyst"
    with pytest.raises(LoginError, match="name"):
        open_auth.login("", None)
    with pytest.raises(LoginError, match="printable"):
        open_auth.login("x" * 65, None)

    auth = ConsoleAuth.create("s3cret")
    with pytest.raises(LoginError, match="password"):
        auth.login("ana", "wrong")
    cookie = auth.login("ana", "s3cret", now=1000.0)
    assert auth.analyst(cookie, now=1001.0) == "ana"
    assert auth.analyst(cookie, now=1000.0 + 13 * 3600) is None  # expired
    payload, _, sig = cookie.rpartition(".")
    assert auth.analyst(f"{payload}x.{sig}", now=1001.0) is None  # tampered
    assert ConsoleAuth.create("other").analyst(cookie, now=1001.0) is None
    assert auth.analyst(None, "Bearer s3cret", "bob") == "bob"
    assert auth.analyst(None, "Bearer wrong", "bob") is None
    assert open_auth.analyst(None, "Bearer anything", "bob") is None  # no token, no bearer


def test_profile_rows_read_an_alerts_entity_snapshot() -> None:
    from features.entity_profile import STATS

    stats = dict.fromkeys(STATS, 0.0) | {"tx_24h": 12.34, "fraud_7d": 3.0, "card_new": 1.0}
    rows = profile_rows({"entity": {"merchant": stats}})
    assert [p["entity"] for p in rows] == ["merchant"]
    shown = {r["label"]: r["value"] for r in rows[0]["rows"]}
    assert shown["transactions, last 24 h"] == "≈ 12.3"
    assert shown["confirmed frauds, last 7 days"] == "3"
    assert shown["this card new here"] == "yes"
    assert profile_rows({"entity": None}) == [] and profile_rows({}) == []
