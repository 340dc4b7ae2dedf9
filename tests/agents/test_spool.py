"""The disk spool on real files: order, commits, recovery after a crash, the size cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.spool import Spool


def payloads(start: int, count: int, size: int = 100) -> list[bytes]:
    return [f"{i:08d}".encode().ljust(size, b".") for i in range(start, start + count)]


def drain(spool: Spool, max_records: int = 7) -> list[bytes]:
    got: list[bytes] = []
    while (chunk := spool.read(max_records=max_records)) is not None:
        got.extend(chunk.records)
        spool.commit(chunk)
    return got


def test_records_come_back_in_order_and_commit_empties_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096, max_bytes=1 << 20)
    for start in range(0, 300, 30):
        spool.append(payloads(start, 30))
    assert spool.pending == 300
    assert spool.stats()["segments"] > 5  # 300 x 108 bytes over 4 KiB segments
    assert drain(spool) == payloads(0, 300)
    assert spool.pending == 0
    assert spool.stats()["segments"] == 1  # shipped segments are deleted
    assert spool.read() is None


def test_uncommitted_records_survive_a_restart_and_are_read_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=4096, max_bytes=1 << 20)
    spool.append(payloads(0, 100))
    first = spool.read(max_records=40)
    assert first is not None
    spool.commit(first)
    second = spool.read(max_records=40)  # read, never acknowledged
    assert second is not None and len(second.records) == 40
    spool.close()

    reopened = Spool(tmp_path, segment_bytes=4096, max_bytes=1 << 20)
    assert reopened.pending == 60
    assert drain(reopened) == payloads(40, 60)


def test_rewind_reads_from_the_cursor_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(payloads(0, 10))
    chunk = spool.read(max_records=5)
    assert chunk is not None and chunk.records == payloads(0, 5)
    spool.rewind()  # the delivery failed
    again = spool.read(max_records=5)
    assert again is not None and again.records == payloads(0, 5)


def test_a_torn_tail_is_cut_and_earlier_records_are_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20, max_bytes=4 << 20)
    spool.append(payloads(0, 20))
    spool.close()
    segment = sorted(tmp_path.glob("seg-*.log"))[-1]
    with segment.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")  # a header promising 64 bytes, then the crash
    reopened = Spool(tmp_path, segment_bytes=1 << 20, max_bytes=4 << 20)
    assert reopened.pending == 20
    reopened.append(payloads(20, 5))
    assert drain(reopened) == payloads(0, 25)


def test_a_corrupt_record_is_counted_not_shipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20, max_bytes=4 << 20)
    spool.append(payloads(0, 10))
    spool.close()
    segment = sorted(tmp_path.glob("seg-*.log"))[-1]
    data = bytearray(segment.read_bytes())
    data[5 * 108 + 8 + 3] ^= 0xFF  # flip a byte in the payload of record 5
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path, segment_bytes=1 << 20, max_bytes=4 << 20)
    assert reopened.corrupt == 5  # record 5 and the four framed after it in that segment
    assert drain(reopened) == payloads(0, 5)


def test_the_size_cap_drops_the_oldest_segment_and_counts_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=2048, max_bytes=8192)
    for start in range(0, 400, 10):
        spool.append(payloads(start, 10))  # 1,080 bytes: one append per 2 KiB segment
    stats = spool.stats()
    assert stats["bytes"] <= 8192 + 2048
    assert stats["dropped"] > 0
    kept = drain(spool)
    assert len(kept) + stats["dropped"] == 400
    assert kept == payloads(400 - len(kept), len(kept))  # the newest survive, in order
    assert spool.pending == 0


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_fsync_policy_keeps_the_data(tmp_path: Path, policy: str) -> None:
    spool = Spool(tmp_path, fsync=policy, fsync_interval_s=0.01)  # type: ignore[arg-type]
    spool.append(payloads(0, 50))
    spool.tick()
    spool.close()
    assert drain(Spool(tmp_path)) == payloads(0, 50)


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two segments"):
        Spool(tmp_path, segment_bytes=4096, max_bytes=4096)
