"""Compact binary event records: what the sequence store keeps and featurization reads.

One fixed numpy dtype (53 bytes) holds only the fields features need, so a 256-event
history is ~13 KiB in Redis and decodes with ``np.frombuffer`` (no per-field parsing).
Ids are reduced to stable 64-bit BLAKE2b hashes: equal ids give equal hashes on every
process and machine, so training and serving agree on "new merchant"/"new device".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from features.contracts import CHANNELS, Transaction

RECORD_DTYPE = np.dtype(
    [
        ("ts", "<i8"),  # event time, epoch ms
        ("tx", "<u8"),  # hash of transaction_id: identity and time-tie order
        ("amount", "<f8"),
        ("mcc", "<u2"),  # numeric MCC, 0..9999
        ("channel", "u1"),  # index into CHANNELS
        ("country", "<u2"),  # two ASCII letters packed; 0 = unknown
        ("lat", "<f4"),  # NaN = not located
        ("lon", "<f4"),
        ("merchant", "<u8"),  # hash; 0 = unknown
        ("device", "<u8"),  # hash; 0 = unknown
    ]
)
RECORD_SIZE = RECORD_DTYPE.itemsize
_OPAQUE = np.dtype(f"V{RECORD_SIZE}")


def opaque(records: np.ndarray) -> np.ndarray:
    """``records`` (RECORD_DTYPE) viewed as opaque items of the same size, same shape.

    For gathers and scatters of whole records: numpy copies a structured item field by
    field and an opaque one in one piece (figures in docs/BENCHMARKS.md).
    """
    return records.view(_OPAQUE)


_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}


def id_hash(value: str | None) -> int:
    """Stable 64-bit hash of an id; 0 is reserved for "missing"."""
    if not value:
        return 0
    digest = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")
    return digest or 1


def hash_ids(values: Iterable[str | None]) -> np.ndarray:
    """Vector of ``id_hash`` (a Python loop: used only at decode and load time)."""
    return np.fromiter((id_hash(v) for v in values), dtype=np.uint64)


def pack_country(code: str | None) -> int:
    """'US' → 0x5553; missing → 0."""
    if not code or len(code) != 2:
        return 0
    return (ord(code[0]) << 8) | ord(code[1])


def records_from_transactions(txs: Sequence[Transaction]) -> np.ndarray:
    """Decoded transactions → records, in input order."""
    out = np.zeros(len(txs), dtype=RECORD_DTYPE)
    for i, tx in enumerate(txs):
        out[i] = (
            tx.epoch_ms,
            id_hash(tx.transaction_id),
            float(tx.amount),
            int(tx.mcc),
            _CHANNEL_INDEX[tx.channel],
            pack_country(tx.country),
            np.nan if tx.lat is None else tx.lat,
            np.nan if tx.lon is None else tx.lon,
            id_hash(tx.merchant_id),
            id_hash(tx.device_id),
        )
    return out


def records_from_table(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """A canonical labelled-file batch (see ``labelled_files``) → records, vectorized."""
    n = table.num_rows
    out = np.zeros(n, dtype=RECORD_DTYPE)
    col = table.column
    out["ts"] = col("timestamp").to_numpy(zero_copy_only=False)
    out["tx"] = hash_ids(col("transaction_id").to_pylist())
    out["amount"] = col("amount").to_numpy(zero_copy_only=False)
    out["mcc"] = np.asarray(col("mcc").to_pylist(), dtype=np.int64).astype(np.uint16)
    channels = col("channel").to_pylist()
    out["channel"] = np.fromiter((_CHANNEL_INDEX[c] for c in channels), np.uint8, n)
    out["country"] = np.fromiter(
        (pack_country(c) for c in col("country").to_pylist()), np.uint16, n
    )
    out["lat"] = col("lat").to_numpy(zero_copy_only=False).astype(np.float32)
    out["lon"] = col("lon").to_numpy(zero_copy_only=False).astype(np.float32)
    out["merchant"] = hash_ids(col("merchant_id").to_pylist())
    out["device"] = hash_ids(col("device_id").to_pylist())
    return out


def sort_key(records: np.ndarray) -> np.ndarray:
    """Indices ordering records by (event time, tx hash): the one order used everywhere."""
    return np.lexsort((records["tx"], records["ts"]))
