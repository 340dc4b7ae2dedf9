"""A real worker scores hosts with the registered models (tests/mlstate.py's stores): the champion
alerts, the challenger runs in shadow without alerting, and a promotion is picked up live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pytest

from agents.replay import replay_to_kafka
from agents.scenarios import generate
from sentinel.contracts import validate
from sentinel.kafka import ALERTS, EVENTS
from sentinel.ml import features, registry, training
from sentinel.ml.model import TrainParams
from sentinel.ml.registry import CHAMPION
from tests.mlstate import HOSTS, MlState
from tests.streams.conftest import StreamEnv

pytestmark = pytest.mark.kafka


def _model_alerts(stream: StreamEnv) -> list[dict[str, Any]]:
    alerts = [orjson.loads(r.value) for r in stream.read_all(ALERTS)]
    return [a for a in alerts if a["rule"]["id"] == "model:host-anomaly"]


def _replay(stream: StreamEnv, count: int, seed: int, offset_s: float) -> int:
    start = datetime.now(UTC) - timedelta(seconds=offset_s)
    events = list(generate("mixed", count, seed=seed, start=start, hosts=HOSTS))
    summary = replay_to_kafka(events, stream.settings, EVENTS)
    assert summary.errors == 0, summary.first_error
    return len(events)


def test_worker_scores_with_the_champion_shadows_the_challenger_and_follows_a_promotion(
    stream_env: StreamEnv, ml_state: MlState
) -> None:
    settings = ml_state.settings
    client = registry.configure(settings.mlflow_uri)
    store = features.feature_store(settings.feast_root)
    champion = registry.by_alias(client, settings.models_name, CHAMPION)
    assert champion is not None
    con = duckdb.connect(str(settings.lake_root / "lake.duckdb"), read_only=True)
    try:
        windows = training.labelled_windows(con)
    finally:
        con.close()
    trained = training.train_and_register(
        store,
        client,
        windows,
        artifact_root=settings.mlflow_artifact_root,
        model_name=settings.models_name,
        feature_service="host_anomaly_v1",
        params=TrainParams(random_state=99),
        holdout_fraction=settings.models_holdout_fraction,
    )
    challenger = trained.ref
    # A challenger that would alert on every host: in shadow, it still must not alert.
    client.set_model_version_tag(settings.models_name, challenger.version, "threshold", "0.0")

    stream_env.env.update(
        SENTINEL_FEAST_DIR=str(settings.feast_root),
        SENTINEL_MLFLOW_TRACKING_URI=settings.mlflow_uri,
        SENTINEL_SCORING_INTERVAL_S="0.5",
        SENTINEL_SCORING_POLL_S="1",
    )
    worker = stream_env.worker().start()
    health = worker.wait(
        lambda h: (
            h["scoring"]["champion"] == champion.label
            and h["scoring"]["challenger"] == challenger.label
        ),
        timeout_s=180,
    )
    pid = worker.proc.pid if worker.proc else None

    first = _replay(stream_env, 3000, seed=21, offset_s=120)
    stream_env.wait_committed(first)
    health = worker.wait(
        lambda h: h["scoring"]["shadow_scored"] >= HOSTS and h["scoring"]["shadow_would_alert"] >= 1
    )
    before = _model_alerts(stream_env)
    assert all(a["provenance"]["model_version"] == champion.label for a in before)
    assert len(before) == health["scoring"]["model_alerts"]
    assert health["scoring"]["shadow_would_alert"] >= HOSTS  # it would have, on every host

    decision = training.promote(
        store, client, windows, model_name=settings.models_name, min_delta=-1.0, min_pr_auc=0.0
    )
    assert decision.promoted and decision.challenger is not None
    assert decision.challenger.version == challenger.version
    health = worker.wait(
        lambda h: (
            h["scoring"]["champion"] == challenger.label and h["scoring"]["challenger"] is None
        ),
        timeout_s=60,
    )
    assert worker.proc is not None and worker.proc.pid == pid  # no restart

    second = _replay(stream_env, 3000, seed=22, offset_s=30)
    stream_env.wait_committed(first + second)
    health = worker.wait(lambda h: h["scoring"]["model_alerts"] >= len(before) + HOSTS)
    after = [a for a in _model_alerts(stream_env) if a not in before]
    assert {a["provenance"]["model_version"] for a in after} == {challenger.label}
    assert {a["host"]["id"] for a in after} == {f"h-{i:03d}" for i in range(HOSTS)}
    for alert in after:
        validate("alert", alert)
        assert alert["rule"]["version"] == challenger.version
        assert alert["context"]["score"] >= 0.0 and alert["context"]["threshold"] == 0.0
    # the worker pushed its live counters: the online store has the window in progress
    online = features.online(store, "host_anomaly_v1", [a["host"]["id"] for a in after])
    counts = {a["host"]["id"]: a["context"]["window_counts"]["events"] for a in after}
    assert all(online.set_index("host_id").loc[h, "events"] >= n for h, n in counts.items())
