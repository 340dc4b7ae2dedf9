"""What one worker process holds: settings, the compiled rules, the detector and its warm state."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from sentinel.logs import configure_logging, get_logger
from sentinel.settings import Settings, get_settings
from sentinel.tracing import tracer
from streams.detection.pipeline import Detector, Outcome, Record
from streams.detection.ruleset import RuleSet
from streams.enrichment import BatchEnrichment, Enricher
from streams.scoring.scorer import ScoringStats
from streams.scoring.windows import LiveWindows
from streams.triage.triage import TriageStats

# Remote answers merged into the engine's tables; past this many the tables start afresh.
MAX_EXTRA_ENTRIES = 50_000

log = get_logger(__name__)


@dataclass
class Counters:
    events: int = 0
    valid: int = 0
    dead_letters: int = 0
    alerts_published: int = 0
    rule_failures: int = 0
    batches: int = 0
    warmed_events: int = 0
    degraded_enrichment_keys: int = 0
    detect_s: float = 0.0  # time in validate + enrich + detect
    busy_s: float = 0.0  # that plus publishing and waiting for acks
    started: float = field(default_factory=time.time)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ruleset = RuleSet()
        packs = self.ruleset.load_dir(settings.rules_dir)
        self.detector = Detector(self.ruleset, max_event_bytes=settings.streams_max_event_bytes)
        self.enricher = Enricher.from_settings(settings)
        self.tables = self.enricher.engine_tables()
        for kind, table in self.tables.items():
            self.ruleset.engine.set_enrichment(kind, table)
        self.detector.enrichment_snapshot = self.enricher.snapshot
        # (topic, partition) -> the last offset the engine evaluated: its windows hold every
        # event of the partition up to there (see streams.detection.agents._warm_windows).
        self.evaluated: dict[tuple[str, int], int] = {}
        self.partitions: list[int] = []  # of the events topic, assigned to this worker
        self.counters = Counters()
        self.host_events: Counter[str] = Counter()  # not yet sent to the host-stats table
        self.host_alerts: Counter[str] = Counter()
        self.live_windows = LiveWindows()  # counted only when scoring is enabled
        self.scoring = ScoringStats()
        self.triage = TriageStats()  # replaced by the triage service's own when it starts
        self.tracer = tracer(settings, "sentinel-worker")  # detection and triage spans
        log.info(
            "rules loaded",
            packs={p.name: p.version for p in packs},
            rules=len(self.ruleset.rules),
            rules_dir=str(settings.rules_dir),
        )

    async def process(self, records: Sequence[Record]) -> Outcome:
        """validate → enrich → detect for one batch (publishing is the caller's job)."""
        return self.detector.detect(await self.prepare(records))

    async def prepare(self, records: Sequence[Record]) -> Outcome:
        """validate → enrich: the valid events as the rules will see them, and the dead letters."""
        outcome = self.detector.validate(records)
        self.merge_enrichment(await self.enricher.enrich_batch(outcome.events))
        return outcome

    def merge_enrichment(self, found: BatchEnrichment) -> None:
        """Load this batch's extra records (remote answers, range matches) into the engine."""
        for kind, extra in found.extra_tables.items():
            table = self.tables.setdefault(kind, {})
            new = {k: v for k, v in extra.items() if table.get(k) != v}
            if not new:
                continue
            if len(table) + len(new) > MAX_EXTRA_ENTRIES:
                table = self.tables[kind] = dict(self.enricher.engine_tables().get(kind, {}))
            table.update(new)
            self.ruleset.engine.set_enrichment(kind, table)
        self.counters.degraded_enrichment_keys += found.degraded_keys


@cache
def runtime() -> Runtime:
    settings = get_settings()
    configure_logging(settings, install_handler=False)  # the Faust worker owns the handlers
    return Runtime(settings)
