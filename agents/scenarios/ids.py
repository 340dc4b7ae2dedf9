"""Cheap, deterministic event ids (ULIDs) and RFC 3339 timestamps for the scenario generator.

Both work from integer microseconds since the Unix epoch so the hot loop never builds datetimes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

# Fixed so that output is reproducible; callers may pass their own start.
DEFAULT_START = datetime(2026, 12, 1, tzinfo=UTC)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Every 15-bit value as its 3 Crockford characters (32,768 short strings, about 2 MB), so the
# time part of a ULID is a lookup, not ten divisions.
_TRIPLES: tuple[str, ...] = tuple(
    a + b + c for a in CROCKFORD for b in CROCKFORD for c in CROCKFORD
)
# Byte -> Crockford character of its low 5 bits: 16 random bytes become the 80-bit random part
# in one C-level translate call.
_LOW5 = bytes(ord(CROCKFORD[b & 31]) for b in range(256))
_DIGITS3: tuple[str, ...] = tuple(f"{i:03d}" for i in range(1000))

Stamp = Callable[[int], tuple[str, str]]


def to_micros(when: datetime) -> int:
    """Microseconds since the Unix epoch; naive datetimes are rejected to keep output UTC."""
    if when.tzinfo is None:
        raise ValueError(f"start must be timezone-aware (got naive {when.isoformat()}); use UTC")
    delta = when.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def stamper(rng: random.Random) -> Stamp:
    """A function from epoch microseconds to (ULID, `YYYY-MM-DDTHH:MM:SS.ffffffZ`).

    The ULID holds the event's millisecond and 80 bits from `rng`. Prefixes that change slowly
    (the ts up to the second, the ULID's top 35 time bits) are cached between calls.
    """
    randbytes = rng.randbytes
    triples, low5, digits = _TRIPLES, _LOW5, _DIGITS3
    second, ts_head = -1, ""
    ms_high, id_head = -1, ""

    def stamp(us: int) -> tuple[str, str]:
        nonlocal second, ts_head, ms_high, id_head
        ms = us // 1000
        if ms >> 15 != ms_high:
            ms_high = ms >> 15
            id_head = (
                CROCKFORD[(ms >> 45) & 31]
                + triples[(ms >> 30) & 0x7FFF]
                + triples[ms_high & 0x7FFF]
            )
        if us // 1_000_000 != second:
            second = us // 1_000_000
            ts_head = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return (
            id_head + triples[ms & 0x7FFF] + randbytes(16).translate(low5).decode(),
            f"{ts_head}{digits[ms % 1000]}{digits[us % 1000]}Z",
        )

    return stamp
