"""A Faust app that does nothing but consume `sentinel.events.v1` in batches, as the worker does:
`bench_stream` runs it to measure what Faust itself costs per event on this machine."""

from __future__ import annotations

from typing import Any

import faust

from sentinel.kafka import EVENTS
from sentinel.settings import get_settings

app = faust.App("sentinel-bench-bare", autodiscover=False)


@app.on_configured.connect
def configure(app: faust.App, conf: Any, **kwargs: Any) -> None:
    settings = get_settings()
    conf.id = settings.streams_app_id
    conf.broker = [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap.split(",")]
    conf.store = "memory://"
    conf.web_enabled = False
    conf.datadir = str(settings.streams_dir / "{conf.id}")
    conf.consumer_auto_offset_reset = "earliest"
    conf.broker_commit_interval = 1.0
    conf.broker_max_poll_records = settings.streams_batch_size
    settings.streams_dir.mkdir(parents=True, exist_ok=True)


events = app.topic(
    EVENTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)


@app.agent(events)
async def consume(stream: Any) -> None:
    settings = get_settings()
    async for _batch in stream.take_events(
        settings.streams_batch_size, within=settings.streams_batch_within_s
    ):
        pass
