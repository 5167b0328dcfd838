"""One streaming reader (and writer) for labelled files: JSONL, CSV or Parquet.

Every reader yields ``pyarrow.RecordBatch`` chunks in one canonical schema, so a 5 GB
file never has to fit in memory and callers never care which format it was.
Timestamps are normalized to epoch milliseconds whether the file has RFC 3339 strings
or numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.errors import RiskstreamError

if TYPE_CHECKING:
    from features.column_mapping import ColumnMapping

CANONICAL_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.string()),
        ("timestamp", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("mcc", pa.string()),
        ("channel", pa.string()),
        ("merchant_id", pa.string()),
        ("country", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("device_id", pa.string()),
        ("is_fraud", pa.int8()),
        ("scenario", pa.string()),
    ]
)
REQUIRED = ("transaction_id", "user_id", "timestamp", "amount", "currency", "mcc", "channel")
FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


class LabelledFileError(RiskstreamError):
    """A labelled file is missing, of an unknown format, or lacks required columns."""

    http_status = 400


def file_format(path: Path) -> str:
    """Format from the extension, or a clear error."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LabelledFileError(
            f"{path}: unknown extension {path.suffix!r}; use .parquet, .csv or .jsonl"
        )
    return fmt


def iter_batches(
    path: Path | str, batch_rows: int = 65_536, mapping: ColumnMapping | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream canonical batches from any labelled file; ``mapping`` maps a foreign layout
    (``features.column_mapping``) onto the contract first."""
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise LabelledFileError(f"{path}: no such file")
    if mapping is None:
        text_columns = ("mcc", "transaction_id", "user_id", "timestamp")
        for batch in _raw_batches(path, fmt, batch_rows, text_columns, stringify=True):
            yield canonicalize(batch, path)
        return
    # a foreign layout: every source column as it is (CSV: as text, the mapping's
    # transforms parse it), then mapped, then canonicalized
    row = 0
    raw = _raw_batches(path, fmt, batch_rows, sorted(mapping.source_columns()), stringify=False)
    for batch in raw:
        mapped = mapping.apply(batch, str(path), first_row=row)
        row += batch.num_rows
        yield canonicalize(mapped, f"{path} (mapping {mapping.name!r})")


def _raw_batches(
    path: Path, fmt: str, batch_rows: int, text_columns: Sequence[str], stringify: bool
) -> Iterator[pa.RecordBatch]:
    """The file's batches as stored; CSV columns ``text_columns`` read as text."""
    if fmt == "parquet":
        return iter(pq.ParquetFile(path).iter_batches(batch_size=batch_rows))
    if fmt == "csv":
        return iter(
            pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 200)),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in text_columns},
                    strings_can_be_null=True,
                ),
            )
        )
    return _iter_jsonl(path, batch_rows, stringify=stringify)


def read_table(path: Path | str) -> pa.Table:
    """Whole file as one canonical table (for training-sized data that fits in memory)."""
    batches = list(iter_batches(path))
    return pa.Table.from_batches(batches, schema=CANONICAL_SCHEMA)


def _iter_jsonl(path: Path, batch_rows: int, stringify: bool = True) -> Iterator[pa.RecordBatch]:
    rows: list[dict[str, object]] = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LabelledFileError(f"{path}:{lineno}: not JSON: {exc.msg}") from None
            if len(rows) >= batch_rows:
                yield pa.RecordBatch.from_pylist(_stringify(rows) if stringify else rows)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(_stringify(rows) if stringify else rows)


def _stringify(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Make JSON's mixed types uniform per column before Arrow infers a schema."""
    for row in rows:
        for key in ("mcc", "timestamp", "transaction_id", "user_id"):
            if key in row and row[key] is not None:
                row[key] = str(row[key])
        if "amount" in row and row["amount"] is not None:
            row["amount"] = float(row["amount"])  # type: ignore[arg-type]
    return rows


def _timestamps_ms(column: pa.Array) -> pa.Array:
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC")), pa.int64())
    values = column.to_pylist()
    out: list[int | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif str(v).isdigit():
            out.append(int(v))
        else:
            out.append(round(datetime.fromisoformat(str(v)).timestamp() * 1000))
    return pa.array(out, pa.int64())


def canonicalize(batch: pa.RecordBatch, source: Path | str = "<batch>") -> pa.RecordBatch:
    """Any batch with the contract's columns → the canonical schema, columns in order."""
    names = set(batch.schema.names)
    missing = [c for c in (*REQUIRED, "is_fraud") if c not in names]
    if missing:
        raise LabelledFileError(f"{source}: missing column(s) {', '.join(missing)}")
    arrays = []
    for field in CANONICAL_SCHEMA:
        if field.name not in names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        if field.name == "timestamp":
            column = _timestamps_ms(column)
        elif field.name == "mcc" and not pa.types.is_string(column.type):
            column = pa.array([None if v is None else f"{int(v):04d}" for v in column.to_pylist()])
        arrays.append(pc.cast(column, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA)


def write_table(table: pa.Table, path: Path | str) -> None:
    """Write a canonical table in the format named by the extension (deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = file_format(path)
    if fmt == "parquet":
        pq.write_table(table, path, compression="zstd")
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        with path.open("w", encoding="utf-8") as fh:
            for batch in table.to_batches(65_536):
                for row in batch.to_pylist():
                    fh.write(
                        json.dumps(
                            {k: v for k, v in row.items() if v is not None}, separators=(",", ":")
                        )
                    )
                    fh.write("\n")
