"""What one worker process holds: settings, the compiled rules, the detector and its warm state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache

from sentinel.logs import configure_logging, get_logger
from sentinel.settings import Settings, get_settings
from streams.detection.pipeline import Detector
from streams.detection.ruleset import RuleSet

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
    started: float = field(default_factory=time.time)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ruleset = RuleSet()
        packs = self.ruleset.load_dir(settings.rules_dir)
        self.detector = Detector(self.ruleset, max_event_bytes=settings.streams_max_event_bytes)
        self.warmed: set[tuple[str, int]] = set()
        self.counters = Counters()
        log.info(
            "rules loaded", packs={p.name: p.version for p in packs},
            rules=len(self.ruleset.rules), rules_dir=str(settings.rules_dir),
        )


@cache
def runtime() -> Runtime:
    settings = get_settings()
    configure_logging(settings, install_handler=False)  # the Faust worker owns the handlers
    return Runtime(settings)
