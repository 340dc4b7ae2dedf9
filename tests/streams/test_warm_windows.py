"""Which partitions a batch warms, and when every window is reset (streams.detection.agents).

The chaos drill found the case this guards: a broker restart revokes the worker's partitions and
gives them straight back; warming them again from the time span counted the last events twice in
every window and raised an alert an undisturbed run does not."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from sentinel.kafka import EVENTS
from sentinel.settings import Settings
from streams.detection import agents


class _RuleSet:
    def __init__(self) -> None:
        self.resets = 0

    def reset_windows(self) -> None:
        self.resets += 1


class _Runtime:
    def __init__(self) -> None:
        self.settings = Settings()
        self.detector = object()
        self.ruleset = _RuleSet()
        self.evaluated: dict[tuple[str, int], int] = {}
        self.counters = type("C", (), {"warmed_events": 0})()


def _records(partition: int, first: int, n: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(EVENTS, partition, o, 1_000 + o, 0, b"h", b"{}", None, 1, 2, [])
        for o in range(first, first + n)
    ]


@pytest.fixture
def warmed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    async def fake_warm_up(
        settings: Any, detector: Any, topic: str, partition: int, before: int, ts: int, **kw: Any
    ) -> int:
        calls.append({"partition": partition, "before": before, **kw})
        return 3

    monkeypatch.setattr(agents, "warm_up", fake_warm_up)
    return calls


def _run(rt: _Runtime, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    with ThreadPoolExecutor(1) as pool:
        asyncio.run(agents._warm_windows(rt, fetched, pool))  # type: ignore[arg-type]


def test_a_partition_new_here_is_warmed_from_its_time_span(warmed: list[dict]) -> None:
    rt = _Runtime()
    _run(rt, {TopicPartition(EVENTS, 0): _records(0, 500, 10)})
    assert warmed == [{"partition": 0, "before": 500, "after_offset": None}]
    assert rt.ruleset.resets == 0 and rt.counters.warmed_events == 3


def test_a_batch_that_goes_on_from_the_last_evaluated_offset_warms_nothing(
    warmed: list[dict],
) -> None:
    rt = _Runtime()
    rt.evaluated[(EVENTS, 0)] = 499  # e.g. the partition was revoked and given straight back
    _run(rt, {TopicPartition(EVENTS, 0): _records(0, 500, 10)})
    assert warmed == [] and rt.ruleset.resets == 0


def test_a_gap_processed_elsewhere_is_warmed_after_what_the_engine_has(
    warmed: list[dict],
) -> None:
    rt = _Runtime()
    rt.evaluated[(EVENTS, 0)] = 299
    _run(rt, {TopicPartition(EVENTS, 0): _records(0, 500, 10)})
    assert warmed == [{"partition": 0, "before": 500, "after_offset": 299}]
    assert rt.ruleset.resets == 0


def test_records_delivered_again_reset_every_window_and_warm_afresh(warmed: list[dict]) -> None:
    rt = _Runtime()
    rt.evaluated.update({(EVENTS, 0): 509, (EVENTS, 1): 99})
    _run(
        rt,
        {
            TopicPartition(EVENTS, 0): _records(0, 500, 10),
            TopicPartition(EVENTS, 1): _records(1, 100, 5),
        },
    )
    assert rt.ruleset.resets == 1
    assert rt.evaluated == {}  # partition 2, 3 ... are warmed afresh when their records come
    assert sorted((c["partition"], c["after_offset"]) for c in warmed) == [(0, None), (1, None)]
