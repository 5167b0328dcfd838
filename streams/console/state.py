"""What the analyst console knows: recent alerts, the labels given to them, and counts.

Pure data, fed by ``ConsoleFeed`` from the ``alerts``, ``feedback`` and ``scores`` topics
and read by the HTTP views, all on the event loop's thread (no locks). Time is the
broker's message timestamp, not the event time: a replayed file of last year's traffic
still shows up as "the last hour" of alerts, which is what an analyst on shift sees.

Memory is bounded: at most ``capacity`` full alerts (oldest dropped first); the counts
behind the numbers keep one small tuple per alert and one counter per minute of scores,
for ``horizon_s`` only.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Review:
    """The latest label an analyst gave a transaction."""

    label: str
    analyst: str | None
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "analyst": self.analyst, "at": self.at}


@dataclass(frozen=True)
class AlertFilter:
    """The queue's filters; empty fields match everything."""

    min_score: float = 0.0
    channel: str = ""
    country: str = ""
    query: str = ""
    status: str = "all"  # all | open | reviewed

    def matches(self, alert: dict[str, Any], review: Review | None) -> bool:
        ctx = alert.get("context") or {}
        if alert.get("score", 0.0) < self.min_score:
            return False
        if self.channel and ctx.get("channel") != self.channel:
            return False
        if self.country and (ctx.get("country") or "").upper() != self.country.upper():
            return False
        if self.query and self.query not in (alert.get("user_id"), alert.get("transaction_id")):
            return False
        if self.status == "open" and review is not None:
            return False
        return not (self.status == "reviewed" and review is None)


@dataclass
class ConsoleState:
    """Recent alerts (newest last), reviews by transaction id, and rolling counts."""

    capacity: int = 5000
    horizon_s: int = 86_400
    alerts: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    by_transaction: dict[str, str] = field(default_factory=dict)
    reviews: dict[str, Review] = field(default_factory=dict)
    alert_times: deque[tuple[int, str]] = field(default_factory=deque)
    scored_per_minute: dict[int, int] = field(default_factory=dict)
    subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = field(default_factory=set)
    latest_ms: int = 0

    # ---- ingestion (called on the loop thread with decoded messages) ----

    def add_alert(
        self, raw: bytes, ts_ms: int, traceparent: str | None = None
    ) -> dict[str, Any] | None:
        """Record one alert message; a redelivered alert id is ignored (returns None).

        ``traceparent``: the alert record's trace context, carried into the analyst's
        label so it joins the transaction's trace."""
        try:
            alert = json.loads(raw)
            alert_id = str(alert["alert_id"])
            tx = str(alert["transaction_id"])
        except (ValueError, KeyError, TypeError):
            return None  # not our contract: nothing an analyst could act on
        if alert_id in self.alerts:
            return None
        alert["received_ms"] = ts_ms
        if traceparent:
            alert["traceparent"] = traceparent
        self.alerts[alert_id] = alert
        self.by_transaction[tx] = alert_id
        while len(self.alerts) > self.capacity:
            _, old = self.alerts.popitem(last=False)
            if self.by_transaction.get(old["transaction_id"]) == old["alert_id"]:
                del self.by_transaction[old["transaction_id"]]
        self.alert_times.append((ts_ms, tx))
        self._advance(ts_ms)
        view = self.view(alert)
        self._notify("alert", view)
        return view

    def add_feedback(self, raw: bytes, ts_ms: int) -> Review | None:
        try:
            fb = json.loads(raw)
            tx, label = str(fb["transaction_id"]), str(fb["label"])
        except (ValueError, KeyError, TypeError):
            return None
        review = Review(label, fb.get("analyst"), str(fb.get("at", "")))
        self.reviews[tx] = review
        self._advance(ts_ms)
        self._notify("review", {"transaction_id": tx, **review.as_dict()})
        return review

    def add_scored(self, ts_ms: int, count: int = 1) -> None:
        minute = ts_ms // 60_000
        self.scored_per_minute[minute] = self.scored_per_minute.get(minute, 0) + count
        self._advance(ts_ms)

    def _advance(self, ts_ms: int) -> None:
        if ts_ms <= self.latest_ms:
            return
        self.latest_ms = ts_ms
        horizon = ts_ms - self.horizon_s * 1000
        while self.alert_times and self.alert_times[0][0] < horizon:
            self.alert_times.popleft()
        if len(self.scored_per_minute) > self.horizon_s // 60 + 2:
            cutoff = horizon // 60_000
            for minute in [m for m in self.scored_per_minute if m < cutoff]:
                del self.scored_per_minute[minute]

    # ---- subscribers (server-sent events) ----

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self.subscribers.discard(queue)

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            if queue.full():  # a stalled browser tab loses live updates, not the server
                self.subscribers.discard(queue)
            else:
                queue.put_nowait((kind, data))

    # ---- queries ----

    def view(self, alert: dict[str, Any]) -> dict[str, Any]:
        review = self.reviews.get(alert["transaction_id"])
        return {**alert, "review": review.as_dict() if review else None}

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        alert = self.alerts.get(alert_id)
        return None if alert is None else self.view(alert)

    def queue(self, flt: AlertFilter, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first, filtered."""
        out = []
        for alert in reversed(self.alerts.values()):
            if flt.matches(alert, self.reviews.get(alert["transaction_id"])):
                out.append(self.view(alert))
                if len(out) >= limit:
                    break
        return out

    def numbers(self, now_ms: int | None = None) -> dict[str, dict[str, Any]]:
        """Alert rate, share reviewed and confirmed-fraud share over the last hour and day."""
        now = self.latest_ms if now_ms is None else now_ms
        out = {}
        for name, span in (("hour", HOUR_MS), ("day", DAY_MS)):
            since = now - span
            txs = [tx for ts, tx in self.alert_times if ts >= since]
            scored = sum(c for m, c in self.scored_per_minute.items() if m * 60_000 >= since)
            labels = [self.reviews[tx].label for tx in txs if tx in self.reviews]
            confirmed = sum(1 for label in labels if label == "fraud")
            out[name] = {
                "alerts": len(txs),
                "scored": scored,
                "alert_rate": _share(len(txs), scored),
                "reviewed": len(labels),
                "share_reviewed": _share(len(labels), len(txs)),
                "confirmed_fraud": confirmed,
                "confirmed_share": _share(confirmed, len(labels)),
            }
        return out


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
