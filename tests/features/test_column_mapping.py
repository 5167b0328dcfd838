"""Bring your own data (#20): foreign layouts mapped onto the contract, each preset tested
on a few rows written in its layout, and one clear line for what cannot be mapped."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from features.column_mapping import PRESETS, MappingError, load_mapping
from features.contracts import decode_transaction
from features.labelled_files import iter_batches

LAYOUTS: dict[str, tuple[list[str], list[list[str]]]] = {
    "tabformer": (
        [
            "User",
            "Card",
            "Year",
            "Month",
            "Day",
            "Time",
            "Amount",
            "Use Chip",
            "Merchant Name",
            "Merchant City",
            "Merchant State",
            "Zip",
            "MCC",
            "Errors?",
            "Is Fraud?",
        ],
        [
            [
                "0",
                "0",
                "2002",
                "9",
                "1",
                "06:21",
                "$134.09",
                "Swipe Transaction",
                "3527213246127876953",
                "La Verne",
                "CA",
                "91750.0",
                "5300",
                "",
                "No",
            ],
            [
                "0",
                "0",
                "2002",
                "9",
                "1",
                "06:42",
                "$-38.48",
                "Online Transaction",
                "-727612092139916043",
                "ONLINE",
                "",
                "",
                "5411",
                "",
                "Yes",
            ],
        ],
    ),
    "sparkov": (
        [
            "",
            "trans_date_trans_time",
            "cc_num",
            "merchant",
            "category",
            "amt",
            "first",
            "last",
            "gender",
            "street",
            "city",
            "state",
            "zip",
            "lat",
            "long",
            "city_pop",
            "job",
            "dob",
            "trans_num",
            "unix_time",
            "merch_lat",
            "merch_long",
            "is_fraud",
        ],
        [
            [
                "0",
                "2019-01-01 00:00:18",
                "2703186189652095",
                "fraud_Rippin, Kub and Mann",
                "misc_net",
                "4.97",
                "Jennifer",
                "Banks",
                "F",
                "561 Perry Cove",
                "Moravian Falls",
                "NC",
                "28654",
                "36.0788",
                "-81.1781",
                "3495",
                "Psychologist",
                "1988-03-09",
                "0b242abb623afc578575680df30655b9",
                "1325376018",
                "36.011293",
                "-82.048315",
                "0",
            ],
            [
                "1",
                "2019-01-01 00:00:44",
                "630423337322",
                "fraud_Heller, Gutmann and Zieme",
                "grocery_pos",
                "107.23",
                "Stephanie",
                "Gill",
                "F",
                "43039 Riley Greens",
                "Orient",
                "WA",
                "99160",
                "48.8878",
                "-118.2105",
                "149",
                "Teacher",
                "1978-06-21",
                "1f76529f8574734946361c461b024d99",
                "1325376044",
                "49.159047",
                "-118.186462",
                "1",
            ],
        ],
    ),
    "paysim": (
        [
            "step",
            "type",
            "amount",
            "nameOrig",
            "oldbalanceOrg",
            "newbalanceOrig",
            "nameDest",
            "oldbalanceDest",
            "newbalanceDest",
            "isFraud",
            "isFlaggedFraud",
        ],
        [
            [
                "1",
                "PAYMENT",
                "9839.64",
                "C1231006815",
                "170136.0",
                "160296.36",
                "M1979787155",
                "0.0",
                "0.0",
                "0",
                "0",
            ],
            [
                "1",
                "TRANSFER",
                "181.0",
                "C1305486145",
                "181.0",
                "0.0",
                "C553264065",
                "0.0",
                "0.0",
                "1",
                "0",
            ],
        ],
    ),
    "ieee-cis": (
        [
            "TransactionID",
            "isFraud",
            "TransactionDT",
            "TransactionAmt",
            "ProductCD",
            "card1",
            "card2",
            "addr1",
            "addr2",
            "P_emaildomain",
        ],
        [
            ["2987000", "0", "86400", "68.5", "W", "13926", "", "315.0", "87.0", ""],
            ["2987001", "1", "86401", "29.0", "W", "2755", "404.0", "325.0", "87.0", "gmail.com"],
        ],
    ),
    "finforge": (
        [
            "transaction_id",
            "user_id",
            "timestamp",
            "merchant",
            "category",
            "amount",
            "transaction_type",
            "persona",
            "spending_style",
            "is_fraud",
            "fraud_type",
            "fraud_scenario_id",
            "risk_score",
        ],
        [
            [
                "txn_000001",
                "user_000001",
                "2026-01-01 11:15:00",
                "Acme Payroll",
                "income",
                "5474.39",
                "credit",
                "salaried",
                "minimalist",
                "False",
                "none",
                "none",
                "0.0",
            ],
            [
                "fraud_txn_000019",
                "user_000001",
                "2026-01-01 23:06:00",
                "Luxury Electronics",
                "shopping",
                "-682.47",
                "debit",
                "salaried",
                "fraud_injected",
                "True",
                "card_fraud",
                "fraud_000006",
                "0.9",
            ],
        ],
    ),
}


def _write(tmp_path: Path, name: str, header: list[str], rows: list[list[str]]) -> Path:
    path = tmp_path / f"{name}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _mapped_rows(path: Path, preset: str) -> list[dict[str, object]]:
    return [r for b in iter_batches(path, mapping=PRESETS[preset]) for r in b.to_pylist()]


def test_every_preset_has_a_layout_test() -> None:
    assert set(PRESETS) == set(LAYOUTS)


@pytest.mark.parametrize("preset", sorted(LAYOUTS))
def test_a_preset_maps_its_layout_onto_the_contract(preset: str, tmp_path: Path) -> None:
    header, rows = LAYOUTS[preset]
    got = _mapped_rows(_write(tmp_path, preset, header, rows), preset)
    assert [r["is_fraud"] for r in got] == [0, 1]
    for row in got:
        tx = decode_transaction(
            {k: v for k, v in row.items() if v is not None and k not in ("is_fraud", "scenario")}
        )  # every mapped row is a valid contract transaction
        assert tx.amount > 0 and len(tx.mcc) == 4
    assert got[0]["timestamp"] < got[1]["timestamp"] or preset == "paysim"


def test_known_values_land_where_they_should(tmp_path: Path) -> None:
    tab = _mapped_rows(_write(tmp_path, "t", *LAYOUTS["tabformer"]), "tabformer")
    assert tab[0]["amount"] == 134.09 and tab[1]["amount"] == 38.48  # "$-38.48": a refund
    assert tab[0]["user_id"] == "0-0" and tab[1]["channel"] == "online"
    assert tab[0]["timestamp"] == 1030861260000  # 2002-09-01 06:21 UTC
    spark = _mapped_rows(_write(tmp_path, "s", *LAYOUTS["sparkov"]), "sparkov")
    assert spark[0]["channel"] == "online" and spark[1]["mcc"] == "5411"
    assert spark[1]["lat"] == 48.8878 and spark[0]["user_id"] == "2703186189652095"
    ieee = _mapped_rows(_write(tmp_path, "i", *LAYOUTS["ieee-cis"]), "ieee-cis")
    assert ieee[0]["timestamp"] == 1512172800000  # 2017-12-01 + 86,400 s


def test_finforge_drops_its_simulator_fields_and_hides_fraud_in_ids(tmp_path: Path) -> None:
    got = _mapped_rows(_write(tmp_path, "f", *LAYOUTS["finforge"]), "finforge")
    assert not any(str(r["transaction_id"]).startswith("fraud") for r in got)
    assert [r["scenario"] for r in got] == [None, "card_fraud"]  # for per-pattern recall only
    assert set(got[0]) == set(PRESETS["finforge"].columns) | {
        "currency",
        "country",
        "lat",
        "lon",
        "device_id",
    }  # contract fields only: persona, risk_score... stay behind
    assert got[1]["amount"] == 682.47 and got[1]["channel"] == "online"
    assert got[0]["mcc"] == "6012"  # income: a financial-institution code


def test_a_missing_column_is_one_line_naming_it(tmp_path: Path) -> None:
    header, rows = LAYOUTS["paysim"]
    path = _write(
        tmp_path, "p", [h for h in header if h != "nameOrig"], [r[:3] + r[4:] for r in rows]
    )
    with pytest.raises(MappingError, match=r"needs column.*nameOrig"):
        list(iter_batches(path, mapping=PRESETS["paysim"]))


def test_an_unreadable_value_names_the_row_and_column(tmp_path: Path) -> None:
    header, rows = LAYOUTS["tabformer"]
    bad = [rows[0], [*rows[1][:6], "$abc", *rows[1][7:]]]
    with pytest.raises(MappingError, match=r"row 3, column 'Amount': cannot read '\$abc'"):
        list(iter_batches(_write(tmp_path, "t", header, bad), mapping=PRESETS["tabformer"]))


def test_a_yaml_mapping(tmp_path: Path) -> None:
    (tmp_path / "bank.yaml").write_text(
        "columns:\n  transaction_id: id\n  user_id: card\n  timestamp: when\n"
        "  amount: value\n  mcc: mcc\n  is_fraud: chargeback\n"
        "constants:\n  currency: EUR\n  channel: card_present\n"
        "transforms:\n  timestamp: [{datetime: '%d/%m/%Y %H:%M'}]\n"
        "  amount: [{scale: 0.01}]\n  mcc: [mcc]\n  is_fraud: [bool]\n"
    )
    data = _write(
        tmp_path,
        "bank",
        ["id", "card", "when", "value", "mcc", "chargeback"],
        [["a1", "c9", "03/02/2026 10:30", "1250", "5411", "N"]],
    )
    (row,) = _mapped_rows_with(load_mapping(tmp_path / "bank.yaml"), data)
    assert row["amount"] == 12.5 and row["currency"] == "EUR" and row["is_fraud"] == 0
    assert row["timestamp"] == 1770114600000


def _mapped_rows_with(mapping, path: Path):  # type: ignore[no-untyped-def]
    return [r for b in iter_batches(path, mapping=mapping) for r in b.to_pylist()]


def test_a_bad_mapping_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("columns:\n  not_a_field: x\n")
    with pytest.raises(MappingError, match="not contract fields: not_a_field"):
        load_mapping(tmp_path / "m.yaml")
    with pytest.raises(MappingError, match="neither a preset"):
        load_mapping(tmp_path / "absent.yaml")


@pytest.mark.slow
def test_the_cli_says_one_line_for_a_bad_map(tmp_path: Path) -> None:
    data = _write(tmp_path, "p", *LAYOUTS["paysim"])
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "evaluate", "--data", str(data), "--map", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "neither a preset" in out.stderr and len(out.stderr.strip().splitlines()) == 1
