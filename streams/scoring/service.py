"""The scoring service of a worker: every SCORING_INTERVAL_S, the hosts with new events are scored
in one batch; every SCORING_POLL_S the registry is asked where the aliases point, so a newly
promoted champion is picked up without a restart.

Model alerts are derived state, not tied to the events' offsets: a worker that crashes between
counting and scoring loses at most one interval of live counts (the lake recomputes them), and
alert ids are deterministic per model version, host and window, so a repeat is the same alert.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
from mode import Service

from sentinel.logs import get_logger
from streams.app import TOPICS, app
from streams.metrics import worker_metrics
from streams.runtime import runtime
from streams.scoring.scorer import Scorer

log = get_logger(__name__)


@app.service
class ScoringService(Service):
    def __post_init__(self) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self.scorer: Scorer | None = None

    async def on_stop(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)

    @Service.task
    async def _rounds(self) -> None:
        rt = runtime()
        settings = rt.settings
        if not settings.scoring_enabled:
            return
        scorer = self.scorer = Scorer(settings)
        stats = rt.scoring
        loop = asyncio.get_running_loop()
        polled = -float("inf")
        while not self.should_stop:
            await self.sleep(settings.scoring_interval_s)
            try:
                if time.monotonic() - polled >= settings.scoring_poll_s:
                    polled = time.monotonic()
                    changes = await loop.run_in_executor(self.thread, scorer.refresh)
                    if changes:
                        stats.reloads += 1
                        log.info("models loaded", changes=changes)
                    stats.champion = scorer.champion.ref.label if scorer.champion else None
                    stats.challenger = scorer.shadow.ref.label if scorer.shadow else None
                windows = rt.live_windows.take_dirty()
                if not windows or not scorer.ready:
                    continue
                done = await loop.run_in_executor(self.thread, scorer.score, windows)
                sends = [
                    await TOPICS["alerts"].send(
                        key=a["id"].encode(), value=orjson.dumps(a), force=True
                    )
                    for a in done.alerts
                ]
                await asyncio.gather(*sends)
                stats.rounds += 1
                scores = worker_metrics().model_scores
                for slot, found in (("champion", done.scores), ("challenger", done.shadow_scores)):
                    for score in found.values():  # one per scored host, once a round
                        scores.labels(slot).observe(score)
                stats.windows_scored += len(done.scores)
                stats.model_alerts += len(done.alerts)
                stats.shadow_scored += len(done.shadow_scores)
                stats.shadow_would_alert += done.shadow_would_alert
                stats.shadow_disagreements += done.disagreements
                stats.last_error = None
            except Exception as exc:  # a bad model or store must not stop detection
                stats.last_error = repr(exc)
                log.warning("scoring round failed", error=repr(exc))
