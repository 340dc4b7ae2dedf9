"""Land a Kafka topic into bronze Parquet: Kafka offsets are the cursor, files are written first.

A run reads each partition from where its consumer group stopped up to the end offsets seen at
the start, writes one Parquet file per (partition, chunk, hour folder), records the chunk in the
topic's ledger, and only then commits the offsets. A crash anywhere in between is repaired by the
next run: chunks in the ledger are never landed twice (their offsets are committed for the
group), files of a chunk that never reached the ledger are deleted and landed again.
Records that break their contract go to `quarantine/<topic>/` with the reason, never silently.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.lib.bronze import (
    QUARANTINE_SCHEMA,
    TABLES,
    BronzeTable,
    Folder,
    LakePaths,
    Rejected,
    Row,
)

CHUNK_FILE = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")
Progress = Callable[[int, int], None]  # (records read so far, records this run will read)


class LandingError(RuntimeError):
    """Landing could not start or finish; the message says what to check."""


@dataclass
class PartitionReport:
    start: int  # first offset this run read
    end: int  # end offset seen at the start of the run (exclusive)
    landed_to: int  # next offset to land after this run (= committed offset)
    log_start: int  # earliest offset still in Kafka
    expired: int = 0  # offsets that retention deleted before they were landed


@dataclass
class LandingReport:
    """What one landing run did, for asset metadata and logs."""

    topic: str
    group: str
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    partitions: dict[int, PartitionReport] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def records(self) -> int:
        return self.rows + self.rejected

    @property
    def lag(self) -> int:
        """Records still waiting in Kafka after this run, as of its start."""
        return sum(max(0, p.end - p.landed_to) for p in self.partitions.values())

    @property
    def expired(self) -> int:
        return sum(p.expired for p in self.partitions.values())

    def offset_ranges(self) -> dict[str, str]:
        return {
            str(p): f"{r.start}..{r.landed_to - 1}" if r.landed_to > r.start else "nothing new"
            for p, r in sorted(self.partitions.items())
        }


@dataclass(frozen=True)
class LedgerEntry:
    partition: int
    first: int
    last: int
    files: tuple[str, ...]


def read_ledger(paths: LakePaths, topic: str) -> list[LedgerEntry]:
    ledger = paths.ledger(topic)
    if not ledger.is_dir():
        return []
    entries = []
    for marker in sorted(ledger.glob("p*.json")):
        data = orjson.loads(marker.read_bytes())
        entries.append(
            LedgerEntry(data["partition"], data["first"], data["last"], tuple(data["files"]))
        )
    return entries


def landed_next(entries: list[LedgerEntry]) -> dict[int, int]:
    """Per partition, the offset after the last one the ledger holds."""
    found: dict[int, int] = {}
    for e in entries:
        found[e.partition] = max(found.get(e.partition, 0), e.last + 1)
    return found


def remove_orphans(paths: LakePaths, topic: str, entries: list[LedgerEntry]) -> list[str]:
    """Delete files of chunks that never reached the ledger (a crash mid-chunk)."""
    known = {f for e in entries for f in e.files}
    removed = []
    for root in (paths.bronze(topic), paths.quarantine(topic)):
        for path in root.glob("date=*/hour=*/*"):
            rel = str(path.relative_to(paths.root))
            if path.name.endswith(".tmp") or (CHUNK_FILE.match(path.name) and rel not in known):
                path.unlink()
                removed.append(rel)
    return removed


def _write_atomic(table: pa.Table, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return size


class _Chunk:
    """Rows of one partition since the last flush, grouped by hour folder."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.last = first - 1
        self.rows: dict[Folder, list[Row]] = {}
        self.rejected: dict[Folder, list[tuple[Any, ...]]] = defaultdict(list)
        self.size = 0


class Lander:
    """Lands one topic into one bronze table. `consumer` is a kafka-python KafkaConsumer."""

    def __init__(
        self,
        consumer: Any,
        table: BronzeTable,
        topic: str,
        group: str,
        paths: LakePaths,
        *,
        chunk_rows: int = 200_000,
        max_records: int | None = None,
        progress: Progress | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.consumer = consumer
        self.table = table
        self.topic = topic
        self.group = group
        self.paths = paths
        self.chunk_rows = chunk_rows
        self.max_records = max_records
        self.progress = progress
        self.now = now

    def run(self, partitions: list[int] | None = None, *, clean: bool = True) -> LandingReport:
        """Land `partitions` (default: all of the topic); `clean` removes orphans of a crash first."""
        # A chunk buffers millions of small objects and makes no reference cycles; the cyclic
        # collector would rescan them again and again (a fifth of the run, measured).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run(partitions, clean)
        finally:
            if collecting:
                gc.enable()

    def _run(self, partitions: list[int] | None, clean: bool) -> LandingReport:
        from kafka import OffsetAndMetadata, TopicPartition

        began = time.perf_counter()
        report = LandingReport(self.topic, self.group)
        consumer = self.consumer
        known = consumer.partitions_for_topic(self.topic)
        if not known:
            raise LandingError(
                f"topic '{self.topic}' does not exist on the cluster; "
                "create it with `sentinel topics create`"
            )
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions or known)]
        consumer.assign(tps)

        entries = read_ledger(self.paths, self.topic)
        if clean:
            report.removed_orphans = remove_orphans(self.paths, self.topic, entries)
        in_ledger = landed_next(entries)
        log_start = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        repaired: dict[Any, Any] = {}
        for tp in tps:
            committed = consumer.committed(tp)
            start = max(committed or 0, in_ledger.get(tp.partition, 0))
            if start > (committed or 0):
                # In the ledger but the commit was lost (a crash): commit now, land nothing twice.
                repaired[tp] = OffsetAndMetadata(start, "", -1)
            if start > end[tp]:
                raise LandingError(
                    f"partition {tp.partition} of '{self.topic}' ends at offset {end[tp]}, but the "
                    f"lake has landed it up to offset {start} (its ledger or consumer group "
                    f"'{self.group}'): the topic was recreated or truncated. Start the lake over "
                    "with `sentinel lake reset`, or point SENTINEL_LAKE_DIR and "
                    "SENTINEL_LAKE_CONSUMER_GROUP somewhere new."
                )
            expired = max(0, log_start[tp] - start)
            start = max(start, log_start[tp])
            report.partitions[tp.partition] = PartitionReport(
                start, end[tp], start, log_start[tp], expired
            )
            consumer.seek(tp, start)
        if repaired:
            consumer.commit(repaired)

        todo = {tp for tp in tps if report.partitions[tp.partition].start < end[tp]}
        total = sum(end[tp] - report.partitions[tp.partition].start for tp in todo)
        budget = total if self.max_records is None else min(total, self.max_records)
        chunks: dict[int, _Chunk] = {}
        buffered = read = 0
        landed_at = self.now()
        parse = self.table.parser
        while todo and read < budget:
            batches = consumer.poll(timeout_ms=1000, max_records=min(50_000, budget - read))
            for tp, records in batches.items():
                if tp not in todo or not records:
                    continue
                limit = end[tp]
                if records[-1].offset >= limit:  # written after the run began: the next run's
                    records = [r for r in records if r.offset < limit]
                    todo.discard(tp)
                    if not records:
                        continue
                chunk = chunks.get(tp.partition)
                if chunk is None:
                    chunk = chunks[tp.partition] = _Chunk(records[0].offset)
                rows, rejected = chunk.rows, chunk.rejected
                for r in records:  # the hot loop: keep it lean
                    try:
                        folder, row = parse(r)  # a ConsumerRecord has Record's fields
                    except Rejected as exc:
                        rejected[_folder_of_ms(r.timestamp)].append(
                            (r.key, r.value, str(exc), r.offset, r.timestamp)
                        )
                        continue
                    bucket = rows.get(folder)
                    if bucket is None:
                        bucket = rows[folder] = []
                    bucket.append(row)
                chunk.last = records[-1].offset
                chunk.size += len(records)
                buffered += len(records)
                read += len(records)
                if chunk.last >= limit - 1 or consumer.position(tp) >= limit:
                    todo.discard(tp)
            if self.progress:
                self.progress(read, budget)
            if buffered >= self.chunk_rows:
                self._flush(chunks, report, landed_at)
                buffered = 0
        self._flush(chunks, report, landed_at)
        # Offsets with no record behind them (transaction markers) still count as landed.
        skipped = {}
        for tp in tps:
            part = report.partitions[tp.partition]
            unfinished = part.start < part.end and part.landed_to < part.end
            if unfinished and consumer.position(tp) >= part.end:
                part.landed_to = part.end
                skipped[tp] = OffsetAndMetadata(part.end, "", -1)
        if skipped:
            consumer.commit(skipped)
        report.elapsed_s = time.perf_counter() - began
        return report

    def _flush(self, chunks: dict[int, _Chunk], report: LandingReport, landed_at: datetime) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        commits = {}
        for partition, chunk in sorted(chunks.items()):
            if chunk.size == 0:
                continue
            name = f"p{partition:03d}-{chunk.first:012d}-{chunk.last:012d}.parquet"
            files = []
            for folder, rows in sorted(chunk.rows.items()):
                table = self._bronze_table(rows, partition, landed_at)
                path = self._folder(self.paths.bronze(self.topic), folder) / name
                report.bytes += _write_atomic(table, path)
                report.rows += len(rows)
                files.append(str(path.relative_to(self.paths.root)))
            for folder, bad in sorted(chunk.rejected.items()):
                table = self._quarantine_table(bad, partition, landed_at)
                path = self._folder(self.paths.quarantine(self.topic), folder) / name
                _write_atomic(table, path)
                report.rejected += len(bad)
                files.append(str(path.relative_to(self.paths.root)))
            entry = {
                "partition": partition,
                "first": chunk.first,
                "last": chunk.last,
                "files": files,
                "landed_at": landed_at.isoformat(),
            }
            marker = self.paths.ledger(self.topic) / f"p{partition:03d}-{chunk.last:012d}.json"
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(entry))
            os.replace(tmp, marker)
            report.files.extend(f for f in files if f.startswith("bronze"))
            report.partitions[partition].landed_to = chunk.last + 1
            commits[TopicPartition(self.topic, partition)] = OffsetAndMetadata(
                chunk.last + 1, "", -1
            )
        chunks.clear()
        if commits:
            self.consumer.commit(commits)

    @staticmethod
    def _folder(root: Path, folder: Folder) -> Path:
        return root / f"date={folder[0]}" / f"hour={folder[1]}"

    def _bronze_table(
        self,
        rows: list[Row],
        partition: int,
        landed_at: datetime,
    ) -> pa.Table:
        schema = self.table.schema
        *columns, offsets, stamps = zip(*rows, strict=True)
        arrays = [_array(col, f.type) for col, f in zip(columns, self.table.columns, strict=True)]
        n = len(rows)
        arrays += [
            pa.array([partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(stamps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([landed_at] * n, schema.field("landed_at").type),
        ]
        return pa.Table.from_arrays(arrays, schema=schema)

    @staticmethod
    def _quarantine_table(
        bad: list[tuple[Any, ...]], partition: int, landed_at: datetime
    ) -> pa.Table:
        keys, values, reasons, offsets, stamps = zip(*bad, strict=True)
        n = len(bad)
        arrays = [
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array(reasons, pa.string()),
            pa.array([partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(stamps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array([landed_at] * n, QUARANTINE_SCHEMA.field("landed_at").type),
        ]
        return pa.Table.from_arrays(arrays, schema=QUARANTINE_SCHEMA)


def _folder_of_ms(timestamp_ms: int | None) -> Folder:
    when = datetime.fromtimestamp((timestamp_ms or 0) / 1000, UTC)
    return when.strftime("%Y-%m-%d"), when.strftime("%H")


def _array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(type_):
        # RFC 3339 strings (checked by the contract) cast in C, far faster than datetime parsing.
        strings = pa.array(values, pa.string())
        try:
            return strings.cast(type_)
        except pa.ArrowInvalid:  # nanosecond digits the contract allows: keep microseconds
            return pa.array([_to_micros(v) for v in values], pa.string()).cast(type_)
    return pa.array(values, type_)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _to_micros(ts: str) -> str:
    return _FRACTION.sub(r"\1", ts, count=1)


@dataclass(frozen=True)
class LandingJob:
    """Everything a landing process needs, picklable so partitions can land in parallel processes."""

    table: str  # a bronze table name: events, alerts, dlq
    topic: str
    group: str
    lake_root: Path
    consumer_options: dict[str, Any]
    chunk_rows: int = 200_000
    max_records: int | None = None

    def lander(self, max_records: int | None = None, progress: Progress | None = None) -> Lander:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            group_id=self.group, enable_auto_commit=False, **self.consumer_options
        )
        return Lander(
            consumer,
            TABLES[self.table],
            self.topic,
            self.group,
            LakePaths(self.lake_root),
            chunk_rows=self.chunk_rows,
            max_records=max_records,
            progress=progress,
        )


# Below this many waiting records, starting processes costs more than it saves.
PARALLEL_MIN_RECORDS = 100_000


def _land_partitions(
    job: LandingJob, partitions: list[int], max_records: int | None
) -> LandingReport:
    lander = job.lander(max_records)
    try:
        return lander.run(partitions, clean=False)
    finally:
        lander.consumer.close(autocommit=False)


def merge_reports(reports: list[LandingReport]) -> LandingReport:
    merged = LandingReport(reports[0].topic, reports[0].group)
    for r in reports:
        merged.rows += r.rows
        merged.rejected += r.rejected
        merged.bytes += r.bytes
        merged.files += r.files
        merged.removed_orphans += r.removed_orphans
        merged.partitions.update(r.partitions)
    return merged


def _pending(lander: Lander, partitions: list[int], entries: list[LedgerEntry]) -> dict[int, int]:
    """Records each partition has waiting (what a run would read), without reading them."""
    from kafka import TopicPartition

    consumer = lander.consumer
    tps = [TopicPartition(lander.topic, p) for p in partitions]
    ledger = landed_next(entries)
    end, start = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
    return {
        tp.partition: max(
            0,
            end[tp] - max(consumer.committed(tp) or 0, ledger.get(tp.partition, 0), start[tp]),
        )
        for tp in tps
    }


def _balanced(pending: dict[int, int], workers: int) -> list[list[int]]:
    """Partitions with work, in at most `workers` groups of about equal records.

    The heaviest group comes first: this process lands it, having no start-up to pay.
    """
    groups: list[tuple[int, list[int]]] = [(0, []) for _ in range(workers)]
    for partition, n in sorted(pending.items(), key=lambda kv: -kv[1]):
        if n <= 0:
            continue
        load, members = min(groups, key=lambda g: g[0])
        groups.remove((load, members))
        groups.append((load + n, [*members, partition]))
    groups.sort(key=lambda g: -g[0])
    return [sorted(members) for _, members in groups if members]


def land(
    job: LandingJob,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    parallel_min: int = PARALLEL_MIN_RECORDS,
) -> LandingReport:
    """Land what is new on `job.topic`; with workers > 1, partitions are split over processes.

    kafka-python decodes records in pure Python, so one process tops out near 30k records/s;
    partitions are independent (own files, ledger entries and commits), so groups of them land in
    parallel: one here, the others in child processes (`python -m orchestration.lib.landing`, a
    lean import). Small backlogs land in this process alone.
    """
    began = time.perf_counter()
    lander = job.lander(job.max_records if workers <= 1 else None, progress)
    removed: list[str] = []
    try:
        partitions = sorted(lander.consumer.partitions_for_topic(job.topic) or [])
        groups: list[list[int]] = []
        if workers > 1 and len(partitions) > 1:
            entries = read_ledger(lander.paths, job.topic)
            pending = _pending(lander, partitions, entries)
            if sum(pending.values()) >= parallel_min:
                removed = remove_orphans(lander.paths, job.topic, entries)
                groups = _balanced(pending, workers)
        if len(groups) <= 1:
            lander.max_records = job.max_records
            report = lander.run()
            report.elapsed_s = time.perf_counter() - began
            return report
    finally:
        lander.consumer.close(autocommit=False)
    share = None if job.max_records is None else max(1, job.max_records // len(groups))
    # This process, already warm, lands the first group; children start meanwhile for the rest.
    with ThreadPoolExecutor(len(groups) - 1) as pool:
        children = [pool.submit(_land_in_child, job, g, share) for g in groups[1:]]
        here = _land_partitions(job, groups[0], share)
        reports = [here, *(c.result() for c in children)]
    report = merge_reports(reports)
    report.removed_orphans = removed + report.removed_orphans
    for partition in partitions:  # partitions with nothing new are part of the picture too
        report.partitions.setdefault(partition, PartitionReport(0, 0, 0, 0))
    report.elapsed_s = time.perf_counter() - began
    if progress:
        progress(report.records, report.records)
    return report


def _land_in_child(
    job: LandingJob, partitions: list[int], max_records: int | None
) -> LandingReport:
    request = orjson.dumps(
        {
            "job": {**asdict(job), "lake_root": str(job.lake_root)},
            "partitions": partitions,
            "max_records": max_records,
        }
    )
    child = subprocess.run(
        [sys.executable, "-m", "orchestration.lib.landing"],
        input=request,
        capture_output=True,
        check=False,
    )
    if child.returncode != 0:
        raise LandingError(
            f"landing partitions {partitions} of {job.topic} failed:\n"
            + child.stderr.decode(errors="replace")[-4000:]
        )
    return _report_from(orjson.loads(child.stdout.splitlines()[-1]))


def _report_from(data: dict[str, Any]) -> LandingReport:
    parts = {int(p): PartitionReport(**r) for p, r in data.pop("partitions").items()}
    return LandingReport(**data, partitions=parts)


def _child_main() -> None:
    """Entry point of a landing child: a request on stdin, the report as JSON on stdout."""
    request = orjson.loads(sys.stdin.buffer.read())
    spec = request["job"]
    job = LandingJob(**{**spec, "lake_root": Path(spec["lake_root"])})
    report = _land_partitions(job, request["partitions"], request["max_records"])
    sys.stdout.buffer.write(orjson.dumps(asdict(report), option=orjson.OPT_NON_STR_KEYS) + b"\n")


if __name__ == "__main__":
    _child_main()
