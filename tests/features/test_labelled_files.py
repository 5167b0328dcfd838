"""One reader for JSONL, CSV and Parquet, streaming, with the same result for each."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from features.labelled_files import LabelledFileError, iter_batches, read_table, write_table
from streams.devtools.simulator import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return simulate(SimulatorConfig(users=60, days=10, seed=5))


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_round_trip_every_format(table: pa.Table, tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"tx.{ext}"
    write_table(table, path)
    back = read_table(path)
    assert back.num_rows == table.num_rows
    for col in ("transaction_id", "user_id", "timestamp", "mcc", "channel", "is_fraud"):
        assert back.column(col).to_pylist() == table.column(col).to_pylist(), col
    assert back.column("amount").to_pylist() == pytest.approx(table.column("amount").to_pylist())


def test_reader_streams_in_chunks(table: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "tx.jsonl"
    write_table(table, path)
    sizes = [b.num_rows for b in iter_batches(path, batch_rows=100)]
    assert len(sizes) > 1 and max(sizes) <= 100 and sum(sizes) == table.num_rows


def test_rfc3339_timestamps_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        '{"transaction_id":"a","user_id":"u","timestamp":"2026-01-01T00:00:01Z","amount":"2",'
        '"currency":"USD","mcc":5411,"channel":"online","is_fraud":1}\n'
    )
    t = read_table(path)
    assert t.column("timestamp").to_pylist() == [1767225601000]
    assert t.column("mcc").to_pylist() == ["5411"]


def test_missing_column_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"transaction_id":"a"}\n')
    with pytest.raises(LabelledFileError, match="missing column"):
        read_table(path)
    with pytest.raises(LabelledFileError, match="unknown extension"):
        read_table(tmp_path / "x.xlsx")
