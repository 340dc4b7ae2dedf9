"""The host-anomaly model: training asset, promotion check, drift asset with its check.

`host_anomaly_model` trains on Feast's point-in-time features of every labelled window, holds
out the newest ones, logs the run to MLflow and registers a version as `challenger`. The
`host_anomaly_promotion` check compares it with the `champion` on the same held-out windows and
moves the alias only when it is at least as good; a rejection is a failed (warning) check that
says why. Until then, workers score the challenger in shadow.
"""

from typing import Any

import dagster as dg

from orchestration.lib.resources import LakeResource, ModelsResource
from sentinel.ml import training
from sentinel.ml.model import TrainParams


class TrainConfig(dg.Config):
    """Launchpad knobs of a training run; defaults are the production model's."""

    feature_service: str | None = None  # default: SENTINEL_MODELS_FEATURE_SERVICE
    n_estimators: int = 200
    max_samples: int = 256
    max_features: float = 1.0
    random_state: int = 7


def _windows(lake: LakeResource):  # type: ignore[no-untyped-def]
    con = lake.connect(read_only=True)
    try:
        return training.labelled_windows(con)
    finally:
        con.close()


@dg.asset(
    group_name="models",
    deps=[dg.AssetKey("feast_repository"), dg.AssetKey("host_labels_5m")],
    description="an Isolation Forest on the host features, logged to MLflow, registered as challenger",
    kinds={"mlflow", "scikitlearn"},
)
def host_anomaly_model(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    lake: LakeResource,
    models: ModelsResource,
) -> dg.MaterializeResult[Any]:
    service = config.feature_service or models.feature_service
    params = TrainParams(
        n_estimators=config.n_estimators,
        max_samples=config.max_samples,
        max_features=config.max_features,
        random_state=config.random_state,
    )
    windows = _windows(lake)
    context.log.info(
        f"training on {len(windows):,} windows ({int(windows['is_attack'].sum())} attack) "
        f"with feature service {service}"
    )
    trained = training.train_and_register(
        models.store(),
        models.client(),
        windows,
        artifact_root=models.artifact_root,
        model_name=models.model_name,
        feature_service=service,
        params=params,
        holdout_fraction=models.holdout_fraction,
    )
    ref = trained.ref
    context.log.info(
        f"registered {ref.label} (run {ref.run_id}): held-out PR-AUC {trained.holdout.pr_auc:.3f}, "
        f"precision {trained.holdout.precision:.3f}, recall {trained.holdout.recall:.3f}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_version": ref.label,
            "run_id": ref.run_id,
            "feature_service": service,
            "features": trained.features,
            "threshold": dg.MetadataValue.float(ref.threshold),
            "data_snapshot": trained.snapshot,
            **{
                k: dg.MetadataValue.float(v) for k, v in trained.holdout.metrics("holdout_").items()
            },
            "tracking_uri": models.tracking_uri,
        }
    )


@dg.asset_check(
    asset=host_anomaly_model,
    name="host_anomaly_promotion",
    blocking=True,  # drift waits for the decision; a rejection is a warning and blocks nothing
    description="promote the challenger to champion only if it is at least as good on held-out data",
)
def promotion_check(lake: LakeResource, models: ModelsResource) -> dg.AssetCheckResult:
    decision = training.promote(
        models.store(),
        models.client(),
        _windows(lake),
        model_name=models.model_name,
        min_delta=models.promotion_min_delta,
        min_pr_auc=models.min_pr_auc,
    )
    metadata: dict[str, Any] = {
        "reason": decision.reason,
        "holdout_windows": decision.holdout_rows,
        "challenger": decision.challenger.label if decision.challenger else "-",
        "champion_before": decision.champion_before.label if decision.champion_before else "-",
    }
    if decision.challenger_pr_auc is not None:
        metadata["challenger_pr_auc"] = dg.MetadataValue.float(decision.challenger_pr_auc)
    if decision.champion_pr_auc is not None:
        metadata["champion_pr_auc"] = dg.MetadataValue.float(decision.champion_pr_auc)
    return dg.AssetCheckResult(
        passed=decision.promoted,
        severity=dg.AssetCheckSeverity.WARN,
        description=decision.reason,
        metadata=metadata,
    )


@dg.asset(
    group_name="models",
    deps=[host_anomaly_model],
    description="population stability index of each feature: training window vs the latest",
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "feature_drift_check",
            asset="feature_drift",
            description="no feature's PSI above SENTINEL_MODELS_DRIFT_THRESHOLD (non-blocking)",
        )
    ],
)
def feature_drift(  # Dagster reads a subscripted return type here as one output, not two
    context: dg.AssetExecutionContext, lake: LakeResource, models: ModelsResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    found = training.drift(
        models.store(),
        models.client(),
        _windows(lake),
        artifact_root=models.artifact_root,
        model_name=models.model_name,
        threshold=models.drift_threshold,
        window_h=models.drift_window_h,
    )
    table = "\n".join(
        ["| feature | PSI |", "| --- | --- |"]
        + [f"| {k} | {v:.3f} |" for k, v in sorted(found.psi.items(), key=lambda kv: -kv[1])]
    )
    drifted = found.drifted
    reason = (
        f"{len(drifted)} feature(s) drifted past PSI {found.threshold}: {', '.join(drifted)}"
        if drifted
        else f"no feature's PSI above {found.threshold} (max {max(found.psi.values()):.3f})"
    )
    context.log.info(f"drift of {found.ref.label}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "model_version": found.ref.label,
            "psi": dg.MetadataValue.md(table),
            "psi_max": dg.MetadataValue.float(max(found.psi.values())),
            "training_windows": found.training_rows,
            "latest_windows": found.latest_rows,
            "mlflow_run_id": found.run_id,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="feature_drift_check",
                passed=not drifted,
                severity=dg.AssetCheckSeverity.WARN,
                description=reason,
                metadata={"drifted": drifted},
            )
        ],
    )
