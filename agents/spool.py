"""The agent's disk spool: an append-only, segmented, checksummed queue of encoded events.

Every event the agent accepts is appended here before it is shipped, and leaves only when Kafka
has acknowledged it, so a broker outage (or an agent restart) loses nothing: the shipper reads
from the committed cursor, in order, and commits after each acknowledged chunk.

Layout of the spool folder:

    seg-00000000000000000001.log   records: <u32 length><u32 crc32><payload>, little-endian
    seg-00000000000000000002.log   ... a new segment every `segment_bytes`
    cursor.json                    {"segment": 2, "offset": 4711}: first byte not yet shipped

Durability (the fsync policy):

- `fsync="interval"` (default): appended data is fsynced at most `fsync_interval_s` after it was
  written (on the next append or `tick()`); a SIGKILL loses nothing (the page cache survives a
  process crash), a power loss at most that interval.
- `fsync="always"`: every append call (one batch of events) is fsynced before it returns.
- `fsync="never"`: the kernel decides.

The cursor file is replaced atomically (write, fsync, rename); if it lags behind after a crash,
the records after it are shipped again: delivery is at-least-once across agent crashes and
exactly-once across broker outages (the producer is idempotent and never gives a chunk up).

Size cap: when the segments hold more than `max_bytes`, the oldest segment is deleted even if it
was not shipped, and its records are counted in `dropped` (the explicit drop-oldest policy).
A torn record at the end of the newest segment (a crash mid-write) is truncated away on open;
a checksum mismatch elsewhere skips the rest of that segment and counts `corrupt`.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

FsyncPolicy = Literal["always", "interval", "never"]
_HEADER = struct.Struct("<II")
_PREFIX, _SUFFIX = "seg-", ".log"


@dataclass(frozen=True, order=True)
class Position:
    """A byte position in the spool: segment sequence number and offset inside it."""

    segment: int
    offset: int


@dataclass
class Chunk:
    """Records read from the spool, and the position just after the last one."""

    records: list[bytes]
    end: Position
    bytes: int


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int
    records: int  # valid records in the file


class SpoolError(RuntimeError):
    pass


class Spool:
    """A thread-safe disk queue: `append` from the writer, `read`/`commit` from the shipper."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 8 * 1024 * 1024,
        max_bytes: int = 512 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 0.2,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        if max_bytes < 2 * segment_bytes:
            raise ValueError("max_bytes must hold at least two segments")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self.dropped = 0  # records deleted unshipped by the size cap
        self.corrupt = 0  # records lost to checksum mismatches found on open
        self.appended = 0
        self.committed = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[_Segment] = []
        self._cursor = Position(0, 0)
        self._pending = 0  # records after the cursor
        self._read_pos = Position(0, 0)  # where the next read() starts (>= cursor)
        self._dirty_since: float | None = None
        self._open()

    # -- opening and recovery ---------------------------------------------------------------
    def _open(self) -> None:
        paths = sorted(self.directory.glob(f"{_PREFIX}*{_SUFFIX}"))
        for path in paths:
            seq = int(path.name[len(_PREFIX) : -len(_SUFFIX)])
            size, records = self._scan(path)
            self._segments.append(_Segment(seq, path, size, records))
        cursor_file = self.directory / "cursor.json"
        if cursor_file.exists():
            try:
                raw = orjson.loads(cursor_file.read_bytes())
                self._cursor = Position(int(raw["segment"]), int(raw["offset"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise SpoolError(f"unreadable spool cursor {cursor_file}: {exc}") from exc
        if not self._segments:
            self._new_segment(max(1, self._cursor.segment))
        first = self._segments[0]
        if self._cursor.segment < first.seq:
            self._cursor = Position(first.seq, 0)
        self._read_pos = self._cursor
        self._pending = self._count_from(self._cursor)
        self._writer = self._segments[-1].path.open("ab")

    def _scan(self, path: Path) -> tuple[int, int]:
        """(valid size, records) of a segment, truncated after its last good record.

        A torn tail of the newest segment is a write the crash cut short; a checksum mismatch
        anywhere loses that record and those after it in the segment (counted in `corrupt`).
        """
        data = path.read_bytes()
        offset = records = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if end > len(data):
                break
            if zlib.crc32(data[offset + _HEADER.size : end]) != crc:
                self.corrupt += 1 + _framed(data, end)
                break
            offset = end
            records += 1
        if offset < len(data):
            with path.open("r+b") as fh:
                fh.truncate(offset)
        return offset, records

    def _count_from(self, position: Position) -> int:
        total = 0
        for seg in self._segments:
            if seg.seq > position.segment:
                total += seg.records
            elif seg.seq == position.segment and position.offset < seg.size:
                total += self._records_between(seg.path, position.offset, seg.size)
        return total

    @staticmethod
    def _records_between(path: Path, start: int, end: int) -> int:
        with path.open("rb") as fh:
            fh.seek(start)
            return _framed(fh.read(end - start), 0)

    def _new_segment(self, seq: int) -> None:
        path = self.directory / f"{_PREFIX}{seq:020d}{_SUFFIX}"
        path.touch()
        self._segments.append(_Segment(seq, path, 0, 0))
        _fsync_dir(self.directory)

    # -- writing ----------------------------------------------------------------------------
    def append(self, payloads: list[bytes]) -> None:
        """Append records in order (one write call); fsync per policy."""
        if not payloads:
            return
        parts = []
        for payload in payloads:
            parts.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        blob = b"".join(parts)
        with self._lock:
            seg = self._segments[-1]
            if seg.size and seg.size + len(blob) > self.segment_bytes:
                self._sync_locked()
                self._writer.close()
                self._new_segment(seg.seq + 1)
                seg = self._segments[-1]
                self._writer = seg.path.open("ab")
            self._writer.write(blob)
            self._writer.flush()  # into the page cache: survives a SIGKILL from here on
            seg.size += len(blob)
            seg.records += len(payloads)
            self._pending += len(payloads)
            self.appended += len(payloads)
            now = time.monotonic()
            if self.fsync == "always":
                self._sync_locked()
            elif self.fsync == "interval":
                if self._dirty_since is None:
                    self._dirty_since = now
                elif now - self._dirty_since >= self.fsync_interval_s:
                    self._sync_locked()
            self._enforce_cap_locked()

    def tick(self) -> None:
        """Fsync data older than the interval (called by the writer when it is idle)."""
        with self._lock:
            if (
                self.fsync == "interval"
                and self._dirty_since is not None
                and time.monotonic() - self._dirty_since >= self.fsync_interval_s
            ):
                self._sync_locked()

    def sync(self) -> None:
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self.fsync != "never":
            os.fsync(self._writer.fileno())
        self._dirty_since = None

    def _enforce_cap_locked(self) -> None:
        while len(self._segments) > 1 and self.bytes_locked() > self.max_bytes:
            oldest = self._segments.pop(0)
            if oldest.seq >= self._cursor.segment:
                unshipped = (
                    oldest.records
                    if oldest.seq > self._cursor.segment
                    else self._records_between(oldest.path, self._cursor.offset, oldest.size)
                )
                self.dropped += unshipped
                self._pending -= unshipped
                self._cursor = Position(self._segments[0].seq, 0)
                if self._read_pos < self._cursor:
                    self._read_pos = self._cursor
                self._write_cursor_locked()
            oldest.path.unlink(missing_ok=True)

    def bytes_locked(self) -> int:
        return sum(s.size for s in self._segments)

    # -- reading and committing -------------------------------------------------------------
    def read(self, max_records: int = 2000, max_bytes: int = 4 * 1024 * 1024) -> Chunk | None:
        """The next records after the read position (not yet committed); None when caught up."""
        with self._lock:
            for seg in self._segments:
                if seg.seq < self._read_pos.segment:
                    continue
                start = self._read_pos.offset if seg.seq == self._read_pos.segment else 0
                if start >= seg.size:
                    continue
                end_limit = seg.size
                path = seg.path
                seq = seg.seq
                break
            else:
                return None
        # The file is only appended to; reading outside the lock is safe up to end_limit.
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read(min(end_limit - start, max_bytes + 64 * 1024))
        records: list[bytes] = []
        offset = 0
        while offset + _HEADER.size <= len(data) and len(records) < max_records:
            length, crc = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if end > len(data):
                if not records:  # one record larger than the read window
                    with path.open("rb") as fh:
                        fh.seek(start + offset)
                        data = data[:offset] + fh.read(_HEADER.size + length)
                    continue
                break
            payload = data[offset + _HEADER.size : end]
            if zlib.crc32(payload) != crc:
                raise SpoolError(f"checksum mismatch in {path.name} at byte {start + offset}")
            records.append(payload)
            offset = end
            if offset >= max_bytes:
                break
        end_pos = Position(seq, start + offset)
        with self._lock:
            self._read_pos = max(self._read_pos, end_pos)
        return Chunk(records, end_pos, offset)

    def rewind(self) -> None:
        """Read again from the committed cursor (after a failed delivery)."""
        with self._lock:
            self._read_pos = self._cursor

    def commit(self, chunk: Chunk) -> None:
        """Mark a chunk delivered: the cursor moves past it, fully shipped segments are deleted."""
        with self._lock:
            if chunk.end <= self._cursor:
                return  # dropped by the cap meanwhile, or already committed
            self._cursor = chunk.end
            self._pending -= len(chunk.records)
            self.committed += len(chunk.records)
            while len(self._segments) > 1:
                oldest = self._segments[0]
                if oldest.seq < self._cursor.segment or (
                    oldest.seq == self._cursor.segment and self._cursor.offset >= oldest.size
                ):
                    self._segments.pop(0)
                    oldest.path.unlink(missing_ok=True)
                    if oldest.seq == self._cursor.segment:
                        self._cursor = Position(self._segments[0].seq, 0)
                else:
                    break
            self._write_cursor_locked()

    def _write_cursor_locked(self) -> None:
        tmp = self.directory / "cursor.json.tmp"
        with tmp.open("wb") as fh:
            fh.write(orjson.dumps({"segment": self._cursor.segment, "offset": self._cursor.offset}))
            fh.flush()
            if self.fsync != "never":
                os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "cursor.json")

    # -- state ------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Records appended and not yet committed (the spool depth)."""
        with self._lock:
            return self._pending

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "pending": self._pending,
                "bytes": self.bytes_locked(),
                "segments": len(self._segments),
                "appended": self.appended,
                "committed": self.committed,
                "dropped": self.dropped,
                "corrupt": self.corrupt,
            }

    def close(self) -> None:
        with self._lock:
            self._sync_locked()
            self._writer.close()


def _framed(data: bytes, offset: int) -> int:
    """How many whole records can be framed in `data` from `offset` on."""
    count = 0
    while offset + _HEADER.size <= len(data):
        (length, _) = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size + length
        if offset > len(data):
            break
        count += 1
    return count


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
