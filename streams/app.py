"""The Faust app: `faust -A streams.app worker -l info` starts a worker (one or many).

The app object is created at import (Faust's `-A` needs it) but reads the settings only when Faust
configures it, through `on_configured`, so importing this module reads no environment.
"""

from __future__ import annotations

from typing import Any

import faust

from sentinel.settings import get_settings
from streams import topics as topic_declarations

app = faust.App(
    "sentinel-streams",
    autodiscover=[
        "streams.detection",
        "streams.heartbeat",
        "streams.hosts",
        "streams.metrics",
        "streams.reload",
        "streams.scoring",
        "streams.triage",
    ],
    origin="streams",
)


@app.on_configured.connect
def configure(app: faust.App, conf: Any, **kwargs: Any) -> None:
    settings = get_settings()
    conf.id = settings.streams_app_id
    conf.broker = [f"kafka://{s.strip()}" for s in settings.kafka_bootstrap.split(",")]
    conf.store = "memory://"
    conf.topic_partitions = settings.kafka_partitions
    conf.topic_replication_factor = 1
    conf.topic_allow_declare = True
    conf.processing_guarantee = "at_least_once"  # see docs/RELIABILITY.md
    settings.streams_dir.mkdir(parents=True, exist_ok=True)
    conf.datadir = str(settings.streams_dir / "{conf.id}")
    conf.tabledir = "tables"
    conf.web_host = settings.streams_web_host
    conf.web_port = settings.streams_web_port
    conf.web_bind = settings.streams_web_host
    conf.broker_commit_interval = 1.0
    # A new worker's services start once the Faust group has settled, and a SIGKILLed member
    # holds the group until its session expires: Faust's 60 s default kept detection idle for a
    # minute after every worker crash or broker restart (found by `make chaos`).
    conf.broker_session_timeout = settings.streams_session_timeout_s
    conf.broker_heartbeat_interval = min(3.0, settings.streams_session_timeout_s / 3)
    conf.consumer_auto_offset_reset = settings.streams_auto_offset_reset
    # The worker creates the host-activity topic before its consumer joins
    # (`streams/hosts.py`); when the broker was unreachable then, Faust declares it mid-join,
    # and an assignment made before its metadata arrived leaves the host table without
    # partitions until the next metadata refresh (5 min by default): look every 5 s.
    conf.consumer_metadata_max_age_ms = 5_000
    conf.producer_acks = -1
    conf.producer_linger_ms = 5  # a batch's sends share produce requests
    conf.stream_wait_empty = False
    conf.consumer_max_fetch_size = 4 * 1024 * 1024
    conf.broker_max_poll_records = settings.streams_batch_size


TOPICS = topic_declarations.declare(app)


def main() -> None:
    app.main()
