"""Score hosts with the registered host-anomaly models, through Feast's online store.

One round: push the touched windows' counters to the push source, fetch every touched host's
features of each model's feature service in one call, score them in one call per model, and turn
champion scores at or above the version's threshold into `model` alerts (one per model version,
host and window). The challenger, when it differs from the champion, is scored in shadow: its
scores are counted and compared, never alerted on.

Everything here is blocking (Feast, MLflow, scikit-learn); the service runs it on its own thread.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel.logs import get_logger
from sentinel.ml.registry import CHALLENGER, CHAMPION, ModelRef
from sentinel.settings import Settings
from streams.scoring.windows import Window

log = get_logger(__name__)

SCHEMA = "sentinel.alert/1"
MAX_REMEMBERED = 100_000  # alert keys already emitted


@dataclass
class Slot:
    ref: ModelRef
    model: Any  # a CompiledForest of the registered pipeline
    features: list[str]
    service: Any  # the FeatureService, looked up once


@dataclass
class Round:
    """What one scoring round did."""

    windows: int
    hosts: int
    scores: dict[str, float]  # champion score per host (empty without a champion)
    alerts: list[dict[str, Any]]
    shadow_scores: dict[str, float] = field(default_factory=dict)
    shadow_would_alert: int = 0
    disagreements: int = 0  # hosts where champion and shadow decide differently


@dataclass
class ScoringStats:
    champion: str | None = None
    challenger: str | None = None  # in shadow (None when it is the champion)
    rounds: int = 0
    windows_scored: int = 0
    model_alerts: int = 0
    shadow_scored: int = 0
    shadow_would_alert: int = 0
    shadow_disagreements: int = 0
    reloads: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Scorer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Any = None
        self.client: Any = None
        self.champion: Slot | None = None
        self.shadow: Slot | None = None
        self.emitted: OrderedDict[str, None] = OrderedDict()

    @property
    def ready(self) -> bool:
        return self.champion is not None or self.shadow is not None

    def refresh(self) -> list[str]:
        """Follow the aliases: load a version when an alias moved. What changed, for the log."""
        from sentinel.ml import features, registry

        uri = self.settings.mlflow_uri
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            return []  # nothing trained yet: no store to create here
        if self.client is None:
            self.client = registry.configure(uri)
        name = self.settings.models_name
        champion = registry.by_alias(self.client, name, CHAMPION)
        challenger = registry.by_alias(self.client, name, CHALLENGER)
        if (
            challenger is not None
            and champion is not None
            and challenger.version == champion.version
        ):
            challenger = None  # promoted: nothing left to shadow
        if (champion or challenger) is not None and self.store is None:
            self.store = features.feature_store(self.settings.feast_root)
        changes = []
        self.champion, moved = self._follow(self.champion, champion)
        if moved:
            changes.append(f"{CHAMPION} -> {champion.label if champion else '-'}")
        self.shadow, moved = self._follow(self.shadow, challenger)
        if moved:
            changes.append(f"{CHALLENGER} (shadow) -> {challenger.label if challenger else '-'}")
        return changes

    def _follow(self, slot: Slot | None, ref: ModelRef | None) -> tuple[Slot | None, bool]:
        from sentinel.ml import features, registry

        if ref is None:
            return None, slot is not None
        if slot is not None and slot.ref.version == ref.version:
            return slot, False
        for loaded in (self.champion, self.shadow):  # a promoted shadow is already loaded
            if loaded is not None and loaded.ref.version == ref.version:
                return Slot(ref, loaded.model, loaded.features, loaded.service), True
        from sentinel.ml.model import CompiledForest

        names = features.feature_names(self.store, ref.feature_service)
        service = self.store.get_feature_service(ref.feature_service)
        return Slot(ref, CompiledForest(registry.load(ref)), names, service), True

    def score(self, windows: list[Window]) -> Round:
        import pandas as pd

        from sentinel.ml import features

        # Only a host's newest touched window is scored: it is the one the online store holds.
        latest: dict[str, Window] = {}
        for w in windows:
            if w.host_id not in latest or w.start > latest[w.host_id].start:
                latest[w.host_id] = w
        if windows:
            features.push_activity(self.store, pd.DataFrame([w.row() for w in latest.values()]))
        hosts = sorted(latest)
        result = Round(len(windows), len(hosts), {}, [])
        if not hosts:
            return result
        decided: dict[str, bool] = {}
        if self.champion is not None:
            slot = self.champion
            scores = self.scores_of(slot, hosts)
            result.scores = scores
            for host, score in scores.items():
                decided[host] = score >= slot.ref.threshold
                if decided[host]:
                    alert = model_alert(slot, latest[host], score)
                    if self._first(alert["id"]):
                        result.alerts.append(alert)
        if self.shadow is not None:
            slot = self.shadow
            result.shadow_scores = self.scores_of(slot, hosts)
            for host, score in result.shadow_scores.items():
                would = score >= slot.ref.threshold
                result.shadow_would_alert += would
                result.disagreements += host in decided and decided[host] != would
            log.info(
                "shadow scores",
                challenger=slot.ref.label,
                champion=self.champion.ref.label if self.champion else None,
                hosts=len(hosts),
                would_alert=result.shadow_would_alert,
                disagreements=result.disagreements,
            )
        return result

    def scores_of(self, slot: Slot, hosts: list[str]) -> dict[str, float]:
        """`slot`'s scores of `hosts` from their online features (hosts without any: left out)."""
        from sentinel.ml import features, model

        frame = features.online(self.store, slot.service, hosts)
        known = frame[slot.features].notna().all(axis=1)
        frame = frame[known]
        if frame.empty:
            return {}
        scores = model.anomaly_scores(slot.model, frame, slot.features)
        return dict(zip(frame["host_id"], (float(s) for s in scores), strict=True))

    def _first(self, key: str) -> bool:
        if key in self.emitted:
            return False
        self.emitted[key] = None
        if len(self.emitted) > MAX_REMEMBERED:
            self.emitted.popitem(last=False)
        return True


def model_alert(slot: Slot, window: Window, score: float) -> dict[str, Any]:
    """A `sentinel.alert/1` for a host window the champion scored at or above its threshold."""
    import sklearn

    ref = slot.ref
    start = window.start_dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rule_id = f"model:{ref.name}"
    dedup = f"{window.host_id}|{start}"
    alert_id = hashlib.sha256("\x1f".join([rule_id, ref.version, dedup]).encode()).hexdigest()[:32]
    return {
        "schema": SCHEMA,
        "id": alert_id,
        "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "rule": {
            "id": rule_id,
            "version": ref.version,
            "hash": hashlib.sha256(f"{ref.uri}|{ref.run_id}".encode()).hexdigest(),
        },
        "severity": "high" if score >= ref.threshold * 1.1 else "medium",
        "title": f"anomalous host activity (score {score:.3f} >= {ref.threshold:.3f})",
        "host": window.host,
        "event_ids": window.event_ids[:50] or [f"window:{dedup}"],
        "mitre": [],
        "context": {
            "score": round(score, 6),
            "threshold": ref.threshold,
            "feature_service": ref.feature_service,
            "window_counts": window.counts(),
        },
        "dedup_key": dedup,
        "window_start": start,
        "provenance": {
            "pack": rule_id,
            "pack_version": ref.version,
            "engine_version": f"scikit-learn {sklearn.__version__}",
            "model_version": ref.label,
        },
    }
