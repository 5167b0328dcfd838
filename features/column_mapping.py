"""Bring your own data: a labelled file whose columns differ from the contract, mapped onto it.

A mapping says, for each contract field, where its value comes from: a source column
(or several, joined with ``-``), or a constant; then a short list of transforms (parse a
number, drop a currency sign, take the absolute value, parse a date, map codes, hash an
id). It is a small YAML file or one of the presets for layouts fraud teams already have
(``PRESETS``; documented in docs/MODEL.md, "Bring your own data").

Only contract fields are produced: every other source column, including a simulator's
own fields (scenario ids, personas, risk scores), is dropped here, so no feature can see
it. A fraud-type column may be mapped to ``scenario``, which only the evaluation's
per-pattern recall reads. A missing source column or a value that cannot be read is
one ``MappingError`` line naming the file, the row and the column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.labelled_files import CANONICAL_SCHEMA, LabelledFileError

CONTRACT_FIELDS = tuple(f.name for f in CANONICAL_SCHEMA)


class MappingError(LabelledFileError):
    """A mapping that cannot be applied: a bad mapping file, a missing column, a bad value."""


class ColumnMapping(BaseModel):
    """How a foreign layout becomes the contract (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    columns: dict[str, str | list[str]] = Field(
        default_factory=dict, description="contract field -> source column(s)"
    )
    constants: dict[str, str | int | float] = Field(default_factory=dict)
    transforms: dict[str, list[str | dict[str, Any]]] = Field(default_factory=dict)

    @field_validator("columns", "constants", "transforms")
    @classmethod
    def _contract_fields_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(CONTRACT_FIELDS))
        if unknown:
            raise ValueError(f"not contract fields: {', '.join(unknown)}")
        return value

    def source_columns(self) -> set[str]:
        out: set[str] = set()
        for src in self.columns.values():
            out.update([src] if isinstance(src, str) else src)
        return out

    def apply(self, batch: pa.RecordBatch, source: str, first_row: int = 0) -> pa.RecordBatch:
        """The batch in contract columns (not yet canonicalized: types are plain Python)."""
        names = set(batch.schema.names)
        missing = sorted(self.source_columns() - names)
        if missing:
            raise MappingError(
                f"{source}: mapping {self.name!r} needs column(s) {', '.join(missing)},"
                f" which the file does not have"
            )
        steps = {f: [_transform(f, t) for t in ts] for f, ts in self.transforms.items()}
        data = {c: batch.column(c).to_pylist() for c in self.source_columns()}
        out: dict[str, list[Any]] = {}
        n = batch.num_rows
        for field in CONTRACT_FIELDS:
            if field in self.columns:
                src = self.columns[field]
                if isinstance(src, str):
                    values = data[src]
                    label = src
                else:
                    parts = [data[c] for c in src]
                    values = [
                        None if any(p is None for p in row) else "-".join(str(p) for p in row)
                        for row in zip(*parts, strict=True)
                    ]
                    label = "+".join(src)
            elif field in self.constants:
                values, label = [self.constants[field]] * n, f"constant {field}"
            else:
                continue
            chain = steps.get(field)
            out[field] = _each(chain, values, source, label, first_row) if chain else values
        return pa.RecordBatch.from_pydict(out)


def _each(
    chain: list[Callable[[Any], Any]], values: list[Any], source: str, column: str, first_row: int
) -> list[Any]:
    """Every step on every value; an error names the row and the value as it was read."""
    result: list[Any] = []
    for i, v in enumerate(values):
        if v is None:
            result.append(None)
            continue
        try:
            x = v
            for fn in chain:
                x = fn(x)
            result.append(x)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            row = first_row + i + 2  # 1-based, after a header line
            raise MappingError(
                f"{source} row {row}, column {column!r}: cannot read {str(v)[:60]!r} ({exc})"
            ) from None
    return result


def _number(v: Any) -> float:
    if isinstance(v, int | float):
        return float(v)
    return float(str(v).replace(",", "").strip())


def _transform(field: str, spec: str | dict[str, Any]) -> Callable[[Any], Any]:
    """One step by name: ``number``, ``abs``, ``hash``, ``lower``, ``{strip: chars}``,
    ``{datetime: format}``, ``{seconds_from: date}``, ``{hours_from: date}``,
    ``{map: {...}, default: value}``, ``{scale: factor}``, ``{null_if: value}``, and
    ``mcc`` (four digits), ``bool`` (yes/no, true/false, 1/0), ``string``."""
    if isinstance(spec, str):
        simple: dict[str, Callable[[Any], Any]] = {
            "number": _number,
            "abs": lambda v: abs(_number(v)),
            "hash": lambda v: hashlib.sha256(str(v).encode()).hexdigest()[:24],
            "lower": lambda v: str(v).lower(),
            "string": str,
            "mcc": lambda v: f"{int(float(v)):04d}",
            "bool": _truthy,
        }
        if spec not in simple:
            raise MappingError(f"transform {spec!r} of {field} is not one of {sorted(simple)}")
        return simple[spec]
    if len(spec) != 1 and "map" not in spec:
        raise MappingError(f"transform of {field}: one key per step, got {sorted(spec)}")
    key, arg = next(iter(spec.items())) if "map" not in spec else ("map", spec["map"])
    if key == "strip":
        return lambda v: str(v).strip().strip(str(arg))
    if key == "null_if":
        return lambda v: None if str(v) == str(arg) else v
    if key == "scale":
        return lambda v: _number(v) * float(arg)
    if key == "datetime":

        def parse(v: Any) -> int:
            d = v if isinstance(v, datetime) else datetime.strptime(str(v).strip(), str(arg))
            d = d if d.tzinfo else d.replace(tzinfo=UTC)
            return round(d.timestamp() * 1000)

        return parse
    if key in ("seconds_from", "hours_from"):
        origin = datetime.fromisoformat(str(arg)).replace(tzinfo=UTC)
        unit = timedelta(seconds=1) if key == "seconds_from" else timedelta(hours=1)
        return lambda v: round((origin + unit * _number(v)).timestamp() * 1000)
    if key == "map":
        table = {str(k): val for k, val in dict(arg).items()}
        default = spec.get("default")
        if default is None:
            return lambda v: table[str(v)]
        return lambda v: table.get(str(v), default)
    raise MappingError(f"transform {key!r} of {field} is unknown")


def _truthy(v: Any) -> int:
    text = str(v).strip().lower()
    if text in ("1", "true", "yes", "y", "t", "fraud"):
        return 1
    if text in ("0", "false", "no", "n", "f", "legit", ""):
        return 0
    raise ValueError("not a yes/no value")


def load_mapping(spec: str | Path) -> ColumnMapping:
    """A preset by name, or a YAML mapping file."""
    key = str(spec)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if not path.exists():
        raise MappingError(
            f"--map {key!r}: neither a preset ({', '.join(sorted(PRESETS))}) nor a file"
        )
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml ships with the dev and train extras
        raise MappingError("a YAML mapping needs pyyaml: pip install pyyaml") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ColumnMapping.model_validate({"name": path.stem, **(data or {})})
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not YAML: {' '.join(str(exc).split())[:200]}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MappingError(f"{path}: {where}: {err['msg']}") from None


# Category names of the finforge simulator -> (MCC, channel). Its categories are
# spending kinds, not merchant codes: the nearest ISO 18245 code is chosen by hand.
_FINFORGE: Mapping[str, tuple[str, str]] = {
    "coffee": ("5814", "card_present"),
    "food": ("5812", "card_present"),
    "dining": ("5812", "card_present"),
    "meals": ("5812", "card_present"),
    "groceries": ("5411", "card_present"),
    "fuel": ("5541", "card_present"),
    "healthcare": ("8062", "card_present"),
    "shopping": ("5311", "online"),
    "entertainment": ("7832", "online"),
    "subscription": ("4899", "online"),
    "software": ("5734", "online"),
    "travel": ("4722", "online"),
    "business_travel": ("4722", "online"),
    "utilities": ("4900", "online"),
    "insurance": ("6300", "online"),
    "housing": ("6513", "online"),
    "office_rent": ("6513", "online"),
    "education": ("8220", "online"),
    "inventory": ("5045", "online"),
    "vendor_payment": ("5045", "online"),
    "professional_services": ("8999", "online"),
    "tax": ("9311", "online"),
    "payroll": ("6012", "online"),
    "transfer": ("4829", "online"),
    "income": ("6012", "online"),
    "business_income": ("6012", "online"),
}

PRESETS: dict[str, ColumnMapping] = {
    # finforge (PyPI, MIT): the foreign development set. Its transaction ids start with
    # "fraud_" for injected fraud, so they are hashed; amounts are signed (credits > 0).
    "finforge": ColumnMapping(
        name="finforge",
        columns={
            "transaction_id": "transaction_id",
            "user_id": "user_id",
            "timestamp": "timestamp",
            "amount": "amount",
            "mcc": "category",
            "channel": "category",
            "merchant_id": "merchant",
            "is_fraud": "is_fraud",
            # evaluation only (per-pattern recall); no feature reads ``scenario``
            "scenario": "fraud_type",
        },
        constants={"currency": "USD"},
        transforms={
            "transaction_id": ["hash"],
            "scenario": [{"null_if": "none"}],
            "timestamp": [{"datetime": "%Y-%m-%d %H:%M:%S"}],
            "amount": ["abs"],
            "mcc": [{"map": {k: m for k, (m, _) in _FINFORGE.items()}, "default": "5999"}],
            "channel": [
                {"map": {k: c for k, (_, c) in _FINFORGE.items()}, "default": "card_present"}
            ],
            "merchant_id": ["hash"],
            "is_fraud": ["bool"],
        },
    ),
    # IBM TabFormer, card_transaction.v1.csv: User, Card, Year, Month, Day, Time, Amount
    # ("$12.34", refunds negative), Use Chip, Merchant Name, MCC, Is Fraud? ("Yes"/"No").
    "tabformer": ColumnMapping(
        name="tabformer",
        columns={
            "transaction_id": ["User", "Card", "Year", "Month", "Day", "Time", "Amount"],
            "user_id": ["User", "Card"],
            "timestamp": ["Year", "Month", "Day", "Time"],
            "amount": "Amount",
            "mcc": "MCC",
            "channel": "Use Chip",
            "merchant_id": "Merchant Name",
            "is_fraud": "Is Fraud?",
        },
        constants={"currency": "USD"},
        transforms={
            "transaction_id": ["hash"],
            "timestamp": [{"datetime": "%Y-%m-%d-%H:%M"}],
            "amount": [{"strip": "$"}, "abs"],
            "mcc": ["mcc"],
            "channel": [
                {
                    "map": {
                        "Swipe Transaction": "card_present",
                        "Chip Transaction": "card_present",
                        "Online Transaction": "online",
                    },
                    "default": "card_present",
                }
            ],
            "merchant_id": ["string"],
            "is_fraud": ["bool"],
        },
    ),
    # Sparkov (Kaggle "fraudTrain.csv"): trans_date_trans_time, cc_num, merchant,
    # category (e.g. grocery_pos, shopping_net), amt, lat/long of the card holder,
    # trans_num, is_fraud.
    "sparkov": ColumnMapping(
        name="sparkov",
        columns={
            "transaction_id": "trans_num",
            "user_id": "cc_num",
            "timestamp": "trans_date_trans_time",
            "amount": "amt",
            "mcc": "category",
            "channel": "category",
            "merchant_id": "merchant",
            "lat": "lat",
            "lon": "long",
            "is_fraud": "is_fraud",
        },
        constants={"currency": "USD"},
        transforms={
            "user_id": ["string"],
            "timestamp": [{"datetime": "%Y-%m-%d %H:%M:%S"}],
            "amount": ["abs"],
            "mcc": [
                {
                    "map": {
                        "grocery_pos": "5411",
                        "grocery_net": "5411",
                        "gas_transport": "5541",
                        "shopping_pos": "5311",
                        "shopping_net": "5311",
                        "food_dining": "5812",
                        "health_fitness": "7997",
                        "entertainment": "7832",
                        "home": "5200",
                        "kids_pets": "5995",
                        "personal_care": "7230",
                        "misc_pos": "5999",
                        "misc_net": "5999",
                        "travel": "4722",
                    },
                    "default": "5999",
                }
            ],
            "channel": [
                {
                    "map": {
                        "grocery_net": "online",
                        "shopping_net": "online",
                        "misc_net": "online",
                        "travel": "online",
                    },
                    "default": "card_present",
                }
            ],
            "lat": ["number"],
            "lon": ["number"],
            "is_fraud": ["bool"],
        },
    ),
    # PaySim: step (hours from the start), type, amount, nameOrig, nameDest, isFraud.
    "paysim": ColumnMapping(
        name="paysim",
        columns={
            "transaction_id": ["step", "nameOrig", "nameDest", "amount"],
            "user_id": "nameOrig",
            "timestamp": "step",
            "amount": "amount",
            "mcc": "type",
            "channel": "type",
            "merchant_id": "nameDest",
            "is_fraud": "isFraud",
        },
        constants={"currency": "USD"},
        transforms={
            "transaction_id": ["hash"],
            "timestamp": [{"hours_from": "2026-01-01"}],
            "amount": ["abs"],
            "mcc": [
                {
                    "map": {
                        "PAYMENT": "5999",
                        "TRANSFER": "4829",
                        "CASH_OUT": "6011",
                        "CASH_IN": "6012",
                        "DEBIT": "6011",
                    }
                }
            ],
            "channel": [{"map": {"CASH_OUT": "atm", "DEBIT": "atm"}, "default": "online"}],
            "is_fraud": ["bool"],
        },
    ),
    # IEEE-CIS (Kaggle), train_transaction.csv: TransactionID, TransactionDT (seconds from
    # a reference the competition did not publish; 2017-12-01 is the usual reading),
    # TransactionAmt, ProductCD, card1 + addr1 as the card holder, isFraud.
    "ieee-cis": ColumnMapping(
        name="ieee-cis",
        columns={
            "transaction_id": "TransactionID",
            "user_id": ["card1", "addr1"],
            "timestamp": "TransactionDT",
            "amount": "TransactionAmt",
            "mcc": "ProductCD",
            "is_fraud": "isFraud",
        },
        constants={"currency": "USD", "channel": "online"},
        transforms={
            "transaction_id": ["string"],
            "timestamp": [{"seconds_from": "2017-12-01"}],
            "amount": ["abs"],
            "mcc": [
                {
                    "map": {"W": "5999", "C": "5732", "R": "4722", "H": "5311", "S": "7995"},
                    "default": "5999",
                }
            ],
            "is_fraud": ["bool"],
        },
    ),
}
