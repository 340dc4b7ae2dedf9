"""The agent's heartbeat: the pack versions its filters follow, to `sentinel.heartbeats.v1`
(see sentinel/heartbeat.py), from its own thread, every `heartbeat_interval_s` until stopped.

A broker that is down only costs heartbeats: the next one says the same, and events have their
own path through the spool."""

from __future__ import annotations

import threading

import orjson

from agents.filters import RuleFilter
from sentinel.heartbeat import agent_instance, heartbeat
from sentinel.kafka import HEARTBEATS
from sentinel.kafka.clients import producer
from sentinel.logs import get_logger
from sentinel.settings import Settings

log = get_logger(__name__)


def report_pack_versions(
    settings: Settings, host_id: str, rule_filter: RuleFilter, stop: threading.Event
) -> None:
    instance = agent_instance(host_id)
    client = None
    try:
        while not stop.is_set():
            try:
                if client is None:
                    # Short blocking bounds: a stopping agent must not wait on a broker that is down.
                    client = producer(
                        settings,
                        client_id=f"{settings.kafka_client_id}-heartbeat",
                        linger_ms=0,
                        max_block_ms=2000,
                    )
                beat = heartbeat(
                    settings, instance=instance, kind="agent", packs=dict(rule_filter.versions)
                )
                client.send(HEARTBEATS, key=instance.encode(), value=orjson.dumps(beat))
                client.flush(timeout=5)
            except Exception as exc:  # informational only: the agent's events never wait on it
                log.warning("heartbeat not sent", error=repr(exc))
            stop.wait(settings.heartbeat_interval_s)
    finally:
        if client is not None:
            client.close(timeout=2)
