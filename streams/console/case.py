"""The case view's data: an alert with the user's stored history in readable rows.

The history comes from the sequence store (what the model saw), so it holds only what
the compact records keep: no card data, and merchants/devices as hashes. Flags the
analyst would compute by eye (new merchant, new country) are computed here once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from features.contracts import CHANNELS
from features.events import id_hash


def unpack_country(code: int) -> str | None:
    return f"{chr(code >> 8)}{chr(code & 0xFF)}" if code else None


def history_rows(records: np.ndarray, transaction_id: str) -> list[dict[str, Any]]:
    """One dict per stored event, oldest first; ``current`` marks the alerted one."""
    current = id_hash(transaction_id)
    seen_merchants: set[int] = set()
    seen_countries: set[int] = set()
    rows = []
    for rec in records:
        merchant, country = int(rec["merchant"]), int(rec["country"])
        rows.append(
            {
                "time": datetime.fromtimestamp(int(rec["ts"]) / 1000, UTC).isoformat(),
                "ts_ms": int(rec["ts"]),
                "amount": round(float(rec["amount"]), 2),
                "mcc": f"{int(rec['mcc']):04d}",
                "channel": CHANNELS[int(rec["channel"])],
                "country": unpack_country(country),
                "merchant": f"{merchant:016x}"[:8] if merchant else None,
                "new_merchant": bool(merchant) and merchant not in seen_merchants,
                "new_country": bool(country)
                and bool(seen_countries)
                and country not in seen_countries,
                "current": int(rec["tx"]) == current,
            }
        )
        if merchant:
            seen_merchants.add(merchant)
        if country:
            seen_countries.add(country)
    return rows


#: what the case view shows of a profile, in the analyst's words, in this order
PROFILE_ROWS: tuple[tuple[str, str], ...] = (
    ("tx_1h", "transactions, last hour"),
    ("tx_24h", "transactions, last 24 h"),
    ("tx_7d", "transactions, last 7 days"),
    ("cards_24h", "different cards, last 24 h"),
    ("cards_7d", "different cards, last 7 days"),
    ("new_cards_7d", "cards new here, last 7 days"),
    ("fraud_7d", "confirmed frauds, last 7 days"),
    ("fraud_30d", "confirmed frauds, last 30 days"),
    ("fraud_amount_30d", "confirmed fraud amount, last 30 days"),
    ("legit_30d", "confirmed legitimate, last 30 days"),
    ("card_new", "this card new here"),
)


def profile_rows(alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The alert's merchant and device profiles (as the event found them), readable:
    one entry per entity, each with labelled values (counts rounded; decayed counts are
    "about")."""
    out = []
    for kind, stats in (alert.get("entity") or {}).items():
        rows = []
        for key, label in PROFILE_ROWS:
            value = float(stats.get(key, 0.0))
            if key == "card_new":
                shown = "yes" if value else "no"
            elif key.startswith(("fraud", "legit")):
                shown = f"{value:,.2f}" if key == "fraud_amount_30d" else f"{value:.0f}"
            else:
                shown = f"≈ {value:,.1f}"
            rows.append({"label": label, "value": shown})
        out.append({"entity": kind, "rows": rows})
    return out
