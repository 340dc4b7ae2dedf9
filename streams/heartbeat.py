"""The worker's heartbeat: the pack versions it runs, to `sentinel.heartbeats.v1` (see
sentinel/heartbeat.py), first right after start-up and then every `heartbeat_interval_s`."""

from __future__ import annotations

import orjson

from sentinel.heartbeat import heartbeat, worker_instance
from sentinel.logs import get_logger
from streams.app import TOPICS, app
from streams.runtime import runtime

log = get_logger(__name__)


@app.task
async def report_pack_versions() -> None:
    rt = runtime()
    settings = rt.settings
    instance = worker_instance(settings)
    while not app.should_stop:  # app.sleep returns at once while the worker shuts down
        beat = heartbeat(
            settings,
            instance=instance,
            kind="worker",
            packs={name: pack.version for name, pack in rt.ruleset.packs.items()},
        )
        try:
            await TOPICS["heartbeats"].send(
                key=instance.encode(), value=orjson.dumps(beat), force=True
            )
        except Exception as exc:  # a heartbeat is informational: never stop the worker for it
            log.warning("heartbeat not sent", error=repr(exc))
        await app.sleep(settings.heartbeat_interval_s)
