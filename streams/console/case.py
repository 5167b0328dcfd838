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
