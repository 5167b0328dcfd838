"""`riskstream produce` delivers every event of a file to the transactions topic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from features.labelled_files import write_table
from streams.devtools.simulator import SimulatorConfig, simulate
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def test_produce_file_at_rate_delivers_every_event(stack, make_topics, tmp_path: Path) -> None:
    (topic,) = make_topics("tx")
    table = simulate(SimulatorConfig(users=40, days=15, seed=3))
    path = tmp_path / "tx.parquet"
    write_table(table, path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "produce",
            "--file",
            str(path),
            "--rate",
            "2000",
            "--topic",
            topic,
            "--bootstrap-servers",
            stack.bootstrap_servers,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"delivered {table.num_rows} messages" in out.stderr
    msgs = read_topic(
        stack.bootstrap_servers,
        topic,
        expected=table.num_rows,
        key_of=lambda m: json.loads(m.value())["transaction_id"],
    )
    ids = {json.loads(m.value())["transaction_id"] for m in msgs}
    assert ids == set(table.column("transaction_id").to_pylist())
    first = json.loads(msgs[0].value())
    assert "is_fraud" not in first  # labels stay in the file
    assert msgs[0].key().decode() == first["user_id"]
