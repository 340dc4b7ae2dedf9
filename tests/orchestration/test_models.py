"""Features and models on the real broker, lake, Feast stores and MLflow store (tests/mlstate.py):
export + apply + materialize, train → register → promote, a worse model kept out, parity of
offline and online features and of batch and stream scores, drift."""

from __future__ import annotations

from typing import Any

import dagster as dg
import mlflow.artifacts
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestration.defs.models.assets import feature_drift
from orchestration.lib.resources import build_resources
from sentinel.contracts import validate
from sentinel.ml import features, model, registry
from sentinel.ml.registry import CHALLENGER, CHAMPION
from streams.scoring.scorer import Scorer, model_alert
from streams.scoring.windows import LiveWindows
from tests.mlstate import HOSTS, MlState

pytestmark = pytest.mark.kafka

ALL_FEATURES = [
    "events",
    "process_spawns",
    "distinct_parents",
    "file_writes",
    "bytes_out",
    "auth_failures",
    "dns_queries",
    "dns_distinct_domains",
    "dns_nxdomain",
    "dns_txt_queries",
    "dns_entropy_avg",
    "dns_entropy_max",
    "alerts",
    "high_alerts",
]


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.all_events:
        if (
            event.event_type_value == "ASSET_MATERIALIZATION"
            and event.asset_key
            and event.asset_key.to_user_string() == asset
        ):
            meta = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
            return {k: getattr(v, "value", v) for k, v in meta.items()}
    raise AssertionError(f"{asset} was not materialized")


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {
        e.event_specific_data.check_name: e.event_specific_data  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _client(state: MlState) -> Any:
    return registry.configure(state.settings.mlflow_uri)


def _store(state: MlState) -> Any:
    return features.feature_store(state.settings.feast_root)


def test_lake_hourly_exports_gold_applies_the_repo_and_fills_the_online_store(
    ml_state: MlState,
) -> None:
    assert ml_state.lake_result.success
    gold = ml_state.query(
        "SELECT count(*) AS n, count(DISTINCT host_id) AS hosts FROM gold.host_features_5m"
    )
    rows, hosts = int(gold.n[0]), int(gold.hosts[0])
    assert hosts == HOSTS and rows >= HOSTS * 15  # about 17 windows per host
    exported = _metadata(ml_state.lake_result, "feast_repository")
    assert exported["rows_exported"] == rows
    assert exported["feature_views"] == ["host_activity", "host_alerts", "host_dns"]
    assert exported["feature_services"] == ["host_anomaly_activity_v1", "host_anomaly_v1"]
    assert pq.read_metadata(exported["path"]).num_rows == rows
    online = _metadata(ml_state.lake_result, "online_features")
    assert online["hosts"] == HOSTS and online["rows_materialized"] == 3 * HOSTS
    frame = features.online(_store(ml_state), "host_anomaly_v1", [f"h-{i:03d}" for i in range(99)])
    known = frame.dropna()
    assert len(known) == HOSTS and list(frame.columns) == ["host_id", *ALL_FEATURES]
    assert (known["events"] > 0).all()


def test_models_daily_trains_registers_and_promotes_the_first_champion(
    ml_state: MlState,
) -> None:
    result = ml_state.models_result
    assert result.success
    client = _client(ml_state)
    name = ml_state.settings.models_name
    champion = registry.by_alias(client, name, CHAMPION)
    assert champion is not None and champion.version == "1"
    assert registry.by_alias(client, name, CHALLENGER) == champion
    assert champion.feature_service == "host_anomaly_v1"
    check = _checks(result)["host_anomaly_promotion"]
    assert check.passed and "no champion yet" in check.description
    version = client.get_model_version(name, "1")
    assert version.tags["promotion"] == check.description
    run = client.get_run(champion.run_id)
    for metric in ("pr_auc", "precision", "recall", "alert_rate_per_host_day", "positives"):
        assert f"holdout_{metric}" in run.data.metrics
    assert 0 < run.data.metrics["holdout_pr_auc"] <= 1
    assert run.data.metrics["holdout_positives"] >= 1
    assert run.data.params["feature_service"] == "host_anomaly_v1"
    assert run.data.params["features"] == ",".join(ALL_FEATURES)
    assert len(run.data.tags["data_snapshot"]) == 16
    assert float(version.tags["pr_auc"]) == run.data.metrics["holdout_pr_auc"]
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "plots")}
    assert artifacts == {"plots/pr_curve.png", "plots/score_histogram.png"}
    assert [a.path for a in client.list_artifacts(champion.run_id, "data")] == [
        "data/training_set.parquet"
    ]
    import mlflow.models

    info = mlflow.models.get_model_info(champion.uri)
    assert info.signature.inputs.input_names() == ALL_FEATURES
    trained = _metadata(result, "host_anomaly_model")
    assert trained["model_version"] == "host-anomaly/1" and trained["run_id"] == champion.run_id


def test_offline_and_online_features_are_the_same_for_a_host_and_time(
    ml_state: MlState,
) -> None:
    store = _store(ml_state)
    hosts = sorted(ml_state.query("SELECT DISTINCT host_id FROM gold.host_features_5m").host_id)
    newest = ml_state.query(
        "SELECT host_id, max(event_timestamp) AS event_timestamp FROM gold.host_features_5m "
        "GROUP BY host_id"
    )
    newest["event_timestamp"] = pd.to_datetime(newest["event_timestamp"], utc=True)
    offline = features.historical(store, "host_anomaly_v1", newest).set_index("host_id")
    online = features.online(store, "host_anomaly_v1", hosts).set_index("host_id")
    assert len(online) == len(offline) == HOSTS
    pd.testing.assert_frame_equal(
        online.loc[hosts, ALL_FEATURES].astype("float64"),
        offline.loc[hosts, ALL_FEATURES].astype("float64"),
    )
    # and both are the gold rows themselves
    gold = ml_state.query(
        "SELECT * FROM gold.host_features_5m WHERE (host_id, event_timestamp) IN "
        "(SELECT (host_id, max(event_timestamp)) FROM gold.host_features_5m GROUP BY host_id)"
    ).set_index("host_id")
    assert np.allclose(
        gold.loc[hosts, ALL_FEATURES].astype("float64"), online.loc[hosts, ALL_FEATURES]
    )


def test_a_hosts_score_in_the_stream_equals_its_score_in_batch(ml_state: MlState) -> None:
    client = _client(ml_state)
    champion = registry.by_alias(client, ml_state.settings.models_name, CHAMPION)
    assert champion is not None
    scorer = Scorer(ml_state.settings)
    assert scorer.refresh() == [f"{CHAMPION} -> {champion.label}"]
    assert scorer.champion is not None and scorer.shadow is None
    hosts = [f"h-{i:03d}" for i in range(HOSTS)]
    streamed = scorer.scores_of(scorer.champion, hosts)
    assert sorted(streamed) == hosts
    # batch: the newest window of each host from the run's logged training set, scored by the
    # model loaded from the registry
    newest = ml_state.query(
        "SELECT host_id, max(event_timestamp) AS event_timestamp FROM gold.host_features_5m "
        "GROUP BY host_id ORDER BY host_id"
    )
    newest["event_timestamp"] = pd.to_datetime(newest["event_timestamp"], utc=True)
    frame = features.historical(_store(ml_state), champion.feature_service, newest)
    batch = model.anomaly_scores(registry.load(champion), frame, ALL_FEATURES)
    for host, score in zip(frame["host_id"], batch, strict=True):
        assert streamed[host] == score
    # the worker's compiled forest scores exactly as scikit-learn does, on every training row
    training_set = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=champion.run_id, artifact_path="data/training_set.parquet"
        )
    )
    pipeline = registry.load(champion)
    np.testing.assert_array_equal(
        model.CompiledForest(pipeline).score_samples(model.matrix(training_set, ALL_FEATURES)),
        pipeline.score_samples(model.matrix(training_set, ALL_FEATURES)),
    )
    # a champion's alert for a host above the threshold is a valid contract alert
    window = LiveWindows()
    window.observe(
        [
            {
                "id": "e-1",
                "ts": "2026-12-03T08:01:00Z",
                "host": {"id": hosts[0]},
                "kind": "auth",
                "auth": {"action": "failure"},
            }
        ]
    )
    (w,) = window.take_dirty()
    alert = model_alert(scorer.champion, w, champion.threshold + 0.01)
    validate("alert", alert)
    assert alert["provenance"]["model_version"] == champion.label
    assert alert["rule"] == {
        "id": "model:host-anomaly",
        "version": "1",
        "hash": alert["rule"]["hash"],
    }


def test_live_window_counters_equal_the_gold_activity_rows(ml_state: MlState) -> None:
    live = LiveWindows(keep=10_000)
    live.observe(ml_state.events())
    counted = pd.DataFrame(
        [
            {"host_id": w.host_id, "window_start": w.start_dt, **w.counts()}
            for windows in live.hosts.values()
            for w in windows.values()
        ]
    ).sort_values(["host_id", "window_start"], ignore_index=True)
    columns = [
        "events",
        "process_spawns",
        "distinct_parents",
        "file_writes",
        "bytes_out",
        "auth_failures",
    ]
    gold = ml_state.query(
        f"SELECT host_id, window_start, {', '.join(columns)} FROM gold.host_activity_5m "
        "ORDER BY host_id, window_start"
    )
    gold["window_start"] = pd.to_datetime(gold["window_start"], utc=True)
    assert len(counted) == len(gold)
    pd.testing.assert_frame_equal(
        counted.astype({c: "int64" for c in columns}),
        gold.astype({c: "int64" for c in columns}),
        check_dtype=False,
    )


def test_a_worse_model_is_not_promoted_and_the_check_says_why(ml_state: MlState) -> None:
    weak = {"feature_service": "host_anomaly_activity_v1", "n_estimators": 1, "max_samples": 4}
    result = ml_state.run(
        "models_daily", run_config={"ops": {"host_anomaly_model": {"config": weak}}}
    )
    assert result.success  # a rejection is a warning, not a failed run
    check = _checks(result)["host_anomaly_promotion"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "not promoted" in check.description and "champion host-anomaly/1" in check.description
    client = _client(ml_state)
    name = ml_state.settings.models_name
    champion = registry.by_alias(client, name, CHAMPION)
    challenger = registry.by_alias(client, name, CHALLENGER)
    assert champion is not None and champion.version == "1"
    assert challenger is not None and challenger.version == "2"
    assert challenger.feature_service == "host_anomaly_activity_v1"
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert meta["challenger_pr_auc"] < meta["champion_pr_auc"]
    assert client.get_model_version(name, "2").tags["promotion"] == check.description


def test_feature_drift_is_logged_and_flags_features_past_the_threshold(ml_state: MlState) -> None:
    drift = _metadata(ml_state.models_result, "feature_drift")
    assert drift["model_version"] == "host-anomaly/1"
    assert drift["training_windows"] > 0 and drift["latest_windows"] > 0
    client = _client(ml_state)
    run = client.get_run(drift["mlflow_run_id"])
    assert {f"psi_{f}" for f in ALL_FEATURES} <= set(run.data.metrics)
    assert run.data.metrics["psi_max"] == pytest.approx(drift["psi_max"])
    # with a threshold below every PSI, the check fails and names the features
    settings = ml_state.settings.model_copy(update={"models_drift_threshold": 1e-9})
    result = dg.materialize(
        [feature_drift],
        resources=build_resources(settings, ml_state.topics),
        instance=ml_state.instance,
    )
    check = _checks(result)["feature_drift_check"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    psi = client.get_run(_metadata(result, "feature_drift")["mlflow_run_id"]).data.metrics
    drifted = [f for f in ALL_FEATURES if psi[f"psi_{f}"] > 1e-9]
    assert drifted and all(f in check.description for f in drifted)


def test_psi_is_zero_for_the_same_sample_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(3)
    sample = rng.normal(size=5000)
    assert model.psi(sample, sample) == pytest.approx(0.0, abs=1e-9)
    small, large = model.psi(sample, sample + 0.2), model.psi(sample, sample + 2.0)
    assert 0 < small < 0.25 < large


def test_stores_in_one_process_keep_their_own_materialization_state(
    ml_state: MlState, tmp_path: Any
) -> None:
    """Feast records materializations on the definition objects it is given: two stores in one
    process (two runs, two tests) must not see each other's, or the second materializes nothing."""
    import shutil

    export = ml_state.settings.feast_root / features.EXPORT
    for name in ("a", "b"):
        root = tmp_path / name
        (root / "data").mkdir(parents=True)
        shutil.copy(export, root / features.EXPORT)
        store = features.feature_store(root)
        features.apply(store)
        first = features.materialize(root, store)
        assert first.hosts == HOSTS, name
        features.apply(store)  # the next run applies again: the intervals stay
        again = features.materialize(root, store)
        assert again.start >= first.end and again.hosts == 0, name
