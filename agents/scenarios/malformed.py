"""Raw records that an event validator must reject, one flaw each, for DLQ and validator tests.

Kinds cycle in a fixed order; every record is distinct and depends only on (index, seed).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from agents.scenarios.ids import DEFAULT_START, stamper, to_micros

_START_US = to_micros(DEFAULT_START)
_NO_LINE_BREAKS = bytes(b if b not in b"\n\r" else 0 for b in range(256))


def _valid(i: int, rng: random.Random) -> dict[str, Any]:
    """A correct proc event; each flaw below breaks exactly one thing in it."""
    event_id, ts = stamper(rng)(_START_US + i * 1_000_003)
    return {
        "schema": "sentinel.event/1",
        "id": event_id,
        "ts": ts,
        "host": {"id": f"h-{i % 1000:03d}", "name": f"web-{i % 7 + 1}", "os": "linux"},
        "sensor": {"name": "procfs", "version": "0.1.0"},
        "kind": "proc",
        "proc": {
            "action": "exec",
            "pid": 4000 + i,
            "ppid": 1,
            "exe": "/usr/bin/ls",
            "cmdline": "ls -la",
            "user": "alice",
            "uid": 1000,
            "parent_exe": "/bin/bash",
            "cwd": "/home/alice",
        },
    }


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _truncated(i: int, rng: random.Random) -> bytes:
    raw = _dump(_valid(i, rng))
    return raw[: len(raw) // 3 + i % 40]


def _garbage(i: int, rng: random.Random) -> bytes:
    # 0xff never appears in UTF-8, so no JSON parser accepts this. No line breaks, so each
    # record stays one line in a JSON Lines file.
    noise = rng.randbytes(30).translate(_NO_LINE_BREAKS)
    return b"\xff\xfe" + noise + f"#{i:x}".encode()


def _array(i: int, rng: random.Random) -> bytes:
    return _dump([_valid(i, rng)])


def _number(i: int, rng: random.Random) -> bytes:
    return str(i * 1024 + rng.getrandbits(10)).encode()


def _no_host_id(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    del event["host"]["id"]
    return _dump(event)


def _wrong_schema(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    event["schema"] = "sentinel.event/0" if i // 10 % 2 else "sentinel.alert/1"
    return _dump(event)


def _unknown_kind(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    event["kind"] = "registry"
    event["registry"] = event.pop("proc")
    return _dump(event)


def _missing_object(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    del event["proc"]
    return _dump(event)


def _pid_string(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    event["proc"]["pid"] = str(event["proc"]["pid"])
    return _dump(event)


def _bad_ts(i: int, rng: random.Random) -> bytes:
    event = _valid(i, rng)
    event["ts"] = ("yesterday", "2026-13-45T25:61:00Z", "01/12/2026 00:00:00", "1796083200")[
        i // 10 % 4
    ]
    return _dump(event)


# Kind name -> builder; `malformed_records` cycles through them in this order.
FLAWS: dict[str, Callable[[int, random.Random], bytes]] = {
    "truncated-json": _truncated,
    "binary-garbage": _garbage,
    "json-array": _array,
    "json-number": _number,
    "missing-host-id": _no_host_id,
    "wrong-schema": _wrong_schema,
    "unknown-kind": _unknown_kind,
    "kind-object-missing": _missing_object,
    "pid-not-integer": _pid_string,
    "bad-ts": _bad_ts,
}


def malformed_records(count: int, *, seed: int = 0) -> list[bytes]:
    """`count` distinct raw records, each invalid as `sentinel.event/1` in one way."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    rng = random.Random(seed)
    flaws = tuple(FLAWS.values())
    return [flaws[i % len(flaws)](i, rng) for i in range(count)]
