"""The bronze layer: what landing writes from each Kafka topic, its Parquet schema and its folders.

Bronze keeps every record as it arrived (`payload`) beside the few fields needed to place and
key it, plus its Kafka coordinates for lineage. dbt's silver models type the payload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from sentinel.contracts import ContractError, validate

TS = pa.timestamp("us", tz="UTC")
KAFKA_COLUMNS = [
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("landed_at", TS, nullable=False),
]


class Rejected(ValueError):
    """A record that cannot enter its bronze table; the reason goes to quarantine with the bytes."""


@dataclass(frozen=True)
class Record:
    """The part of a Kafka record landing needs (kafka-python's ConsumerRecord has these fields)."""

    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


Row = tuple[Any, ...]
Folder = tuple[str, str]  # (date, hour) of the date=/hour= folders


@dataclass(frozen=True)
class BronzeTable:
    """One bronze table: its topic's records parsed into `schema` rows and placed in hour folders."""

    name: str  # `events` -> asset bronze_events, DuckDB view bronze.events
    contract: str | None  # records are checked against it; None keeps any bytes (the DLQ)
    columns: list[pa.Field]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([*self.columns, *KAFKA_COLUMNS])

    @property
    def asset_name(self) -> str:
        return f"bronze_{self.name}"

    @property
    def parser(self) -> Callable[[Record], tuple[Folder, Row]]:
        """record -> (folder, row: the table's columns, then offset and Kafka timestamp).

        Raises Rejected, saying why, for a record that breaks the table's contract.
        """
        return _PARSERS[self.name]


def _loads(value: bytes | None, contract: str) -> dict[str, Any]:
    if value is None:
        raise Rejected("record has no value (a tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    try:
        validate(contract, obj)
    except ContractError as exc:
        raise Rejected(str(exc)) from None
    return obj  # type: ignore[no-any-return]


def _folder_of_ts(ts: str) -> Folder:
    # The contract pins ts to RFC 3339 UTC, so date and hour are fixed-position slices.
    return ts[:10], ts[11:13]


# Rows end with the record's offset and timestamp; the payload stays bytes (orjson checked UTF-8).
def _parse_event(record: Record) -> tuple[Folder, Row]:
    value = record.value
    obj = _loads(value, "event")
    ts = obj["ts"]
    row = (obj["id"], ts, obj["host"]["id"], obj["kind"], value, record.offset, record.timestamp)
    return _folder_of_ts(ts), row


def _parse_alert(record: Record) -> tuple[Folder, Row]:
    value = record.value
    obj = _loads(value, "alert")
    ts = obj["ts"]
    host = obj["host"]["id"]
    row = (
        obj["id"],
        ts,
        obj["rule"]["id"],
        obj["severity"],
        host,
        value,
        record.offset,
        record.timestamp,
    )
    return _folder_of_ts(ts), row


def _header(headers: list[tuple[str, bytes | None]], name: str) -> str | None:
    for key, value in headers:
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def _parse_dead_letter(record: Record) -> tuple[Folder, Row]:
    # A dead letter's bytes are whatever failed; it is placed by the time it was dead-lettered.
    when = datetime.fromtimestamp((record.timestamp or 0) / 1000, UTC)
    offset = _header(record.headers, "source-offset")
    partition = _header(record.headers, "source-partition")
    row = (
        record.key.decode("utf-8", "replace") if record.key is not None else None,
        record.value or b"",
        _header(record.headers, "error") or "(no error header)",
        _header(record.headers, "stage"),
        _header(record.headers, "source-topic"),
        int(partition) if partition and partition.isdigit() else None,
        int(offset) if offset and offset.isdigit() else None,
        record.offset,
        record.timestamp,
    )
    return (when.strftime("%Y-%m-%d"), when.strftime("%H")), row


_PARSERS = {"events": _parse_event, "alerts": _parse_alert, "dlq": _parse_dead_letter}

EVENTS = BronzeTable(
    "events",
    "event",
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_ts", TS, nullable=False),
        pa.field("host_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
    ],
)
ALERTS = BronzeTable(
    "alerts",
    "alert",
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("alert_ts", TS, nullable=False),
        pa.field("rule_id", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("host_id", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
    ],
)
DLQ = BronzeTable(
    "dlq",
    None,
    [
        pa.field("record_key", pa.string()),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("stage", pa.string()),
        pa.field("source_topic", pa.string()),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
    ],
)
TABLES = {t.name: t for t in (EVENTS, ALERTS, DLQ)}

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("record_key", pa.binary()),
        pa.field("payload", pa.binary()),
        pa.field("reason", pa.string(), nullable=False),
        *KAFKA_COLUMNS,
    ]
)

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.binary(): "BLOB",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    TS: "TIMESTAMPTZ",
    pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
}


def empty_select(schema: pa.Schema) -> str:
    """A typed, empty SELECT of `schema`: what a bronze view shows before anything landed."""
    cols = ", ".join(f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"SELECT {cols} WHERE false"


@dataclass(frozen=True)
class LakePaths:
    """Where the lake lives: bronze and quarantine folders per topic, the DuckDB file of dbt."""

    root: Path

    @property
    def duckdb(self) -> Path:
        return self.root / "lake.duckdb"

    def bronze(self, topic: str) -> Path:
        return self.root / "bronze" / topic

    def quarantine(self, topic: str) -> Path:
        return self.root / "quarantine" / topic

    def ledger(self, topic: str) -> Path:
        return self.bronze(topic) / "_ledger"

    def bronze_glob(self, topic: str) -> str:
        # Absolute: DuckDB keeps the pattern in the view and resolves it wherever it is queried.
        return str(self.bronze(topic).resolve() / "date=*" / "hour=*" / "*.parquet")

    def has_bronze(self, topic: str) -> bool:
        return any(self.bronze(topic).glob("date=*/hour=*/*.parquet"))


def bronze_view_sql(paths: LakePaths, table: BronzeTable, topic: str) -> str:
    """The CREATE VIEW for `bronze.<table>`: every landed file of `topic`, or an empty typed set."""
    if paths.has_bronze(topic):
        glob = paths.bronze_glob(topic).replace("'", "''")
        # The date=/hour= folders are layout, not columns: the same columns as the empty view.
        body = (
            f"SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false)"
        )
    else:
        body = empty_select(table.schema)
    return f"CREATE OR REPLACE VIEW bronze.{table.name} AS {body}"


def register_bronze_views(con: Any, paths: LakePaths, topics: dict[str, str]) -> None:
    """Create (or refresh) the `bronze` schema's views in a DuckDB connection; topics by table name."""
    con.execute("CREATE SCHEMA IF NOT EXISTS bronze")
    for name, topic in topics.items():
        con.execute(bronze_view_sql(paths, TABLES[name], topic))
