"""Train → register → promote, and drift: the model lifecycle the `models` assets run.

Each function takes its stores explicitly (a Feast store, an MLflow client, a DuckDB connection to
the lake), so tests and benchmarks drive exactly what Dagster drives.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentinel.ml import features, model, registry
from sentinel.ml.model import Evaluation, TrainParams
from sentinel.ml.registry import CHALLENGER, CHAMPION, ModelRef


def labelled_windows(con: Any) -> pd.DataFrame:
    """Every feature window with its label: host_id, event_timestamp, is_attack, attacks."""
    frame = con.execute(
        f"""
        SELECT f.host_id, f.event_timestamp, coalesce(l.is_attack, false) AS is_attack,
               coalesce(l.attacks, '') AS attacks
        FROM {features.GOLD_TABLE} f
        LEFT JOIN {features.LABELS_TABLE} l USING (host_id, window_start)
        ORDER BY f.event_timestamp, f.host_id
        """
    ).df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def _labels(frame: pd.DataFrame) -> np.ndarray:
    labels: np.ndarray = frame["is_attack"].astype(bool).to_numpy().astype(int)
    return labels


@dataclass
class Trained:
    ref: ModelRef
    train: Evaluation
    holdout: Evaluation
    features: list[str]
    snapshot: str
    plots: list[str] = field(default_factory=list)  # artifact paths in the run


def train_and_register(
    store: Any,
    client: Any,
    windows: pd.DataFrame,
    *,
    artifact_root: str,
    model_name: str,
    feature_service: str,
    params: TrainParams,
    holdout_fraction: float,
) -> Trained:
    """Fit on the older windows, evaluate on the newest, log everything to MLflow, register a
    version of `model_name` and point the `challenger` alias at it."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature

    names = features.feature_names(store, feature_service)
    frame = features.historical(store, feature_service, windows)
    if frame[names].isna().any().any():
        bad = frame[frame[names].isna().any(axis=1)][["host_id", "event_timestamp"]].head(3)
        raise ValueError(f"feature rows missing for some windows, e.g. {bad.to_dict('records')}")
    split = model.time_split(frame, holdout_fraction)
    fitted = model.fit(split.train, names, params)
    train_scores = model.anomaly_scores(fitted, split.train, names)
    threshold = model.best_threshold(_labels(split.train), train_scores)
    holdout_scores = model.anomaly_scores(fitted, split.holdout, names)
    train_eval = model.evaluate(split.train, _labels(split.train), train_scores, threshold)
    holdout_eval = model.evaluate(split.holdout, _labels(split.holdout), holdout_scores, threshold)
    snapshot = model.snapshot_digest(frame[["host_id", "event_timestamp", *names, "is_attack"]])
    span = {
        "train_start": split.train["event_timestamp"].min().isoformat(),
        "train_end": split.train["event_timestamp"].max().isoformat(),
        "holdout_start": split.holdout["event_timestamp"].min().isoformat(),
        "holdout_end": split.holdout["event_timestamp"].max().isoformat(),
    }
    experiment = registry.experiment(client, artifact_root)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(
            experiment_id=experiment, run_name=f"{feature_service}-{datetime.now():%Y%m%d-%H%M%S}"
        ),
    ):
        mlflow.log_params(
            {
                **asdict(params),
                "feature_service": feature_service,
                "features": ",".join(names),
                "holdout_fraction": holdout_fraction,
                "model": "log1p + IsolationForest",
            }
        )
        mlflow.log_metrics(
            {
                **train_eval.metrics("train_"),
                **holdout_eval.metrics("holdout_"),
                "threshold": threshold,
            }
        )
        mlflow.set_tags(
            {
                "feature_service": feature_service,
                "data_snapshot": snapshot,
                "data_rows": str(len(frame)),
                "data_source": features.GOLD_TABLE,
                **span,
            }
        )
        out = Path(tmp)
        drawn = model.plot(
            out / "plots", _labels(split.holdout), holdout_scores, threshold, "held-out windows"
        )
        plots = [f"plots/{p.name}" for p in drawn]
        mlflow.log_artifacts(str(out / "plots"), "plots")
        frame.to_parquet(out / "training_set.parquet", index=False)
        mlflow.log_artifact(str(out / "training_set.parquet"), "data")
        inputs = model.matrix(split.holdout, names)
        info = mlflow.sklearn.log_model(
            fitted,
            name="model",
            signature=infer_signature(inputs, holdout_scores),
            input_example=inputs.head(5),
            registered_model_name=model_name,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            skops_trusted_types=model.TRUSTED_TYPES,
        )
        version = str(info.registered_model_version)
    tags = {
        "feature_service": feature_service,
        "threshold": repr(threshold),
        "pr_auc": repr(holdout_eval.pr_auc),
        "data_snapshot": snapshot,
        **span,
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    ref = registry.by_version(client, model_name, version)
    return Trained(ref, train_eval, holdout_eval, names, snapshot, plots)


def evaluate_version(
    store: Any, ref: ModelRef, windows: pd.DataFrame
) -> tuple[Evaluation, np.ndarray]:
    """`ref` on `windows` through its own feature service: (evaluation, scores)."""
    names = features.feature_names(store, ref.feature_service)
    frame = features.historical(store, ref.feature_service, windows)
    scores = model.anomaly_scores(registry.load(ref), frame, names)
    return model.evaluate(frame, _labels(frame), scores, ref.threshold), scores


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    challenger: ModelRef | None
    champion_before: ModelRef | None
    challenger_pr_auc: float | None = None
    champion_pr_auc: float | None = None
    holdout_rows: int = 0


def promote(
    store: Any,
    client: Any,
    windows: pd.DataFrame,
    *,
    model_name: str,
    min_delta: float,
    min_pr_auc: float,
) -> Decision:
    """Compare the challenger with the champion on the challenger's held-out windows (each
    through its own feature service); move `champion` only if the challenger is at least as good.
    The reason is recorded on the challenger's version (tag `promotion`) either way."""
    challenger = registry.by_alias(client, model_name, CHALLENGER)
    champion = registry.by_alias(client, model_name, CHAMPION)
    if challenger is None:
        return Decision(
            False, f"no '{CHALLENGER}' version of {model_name} to promote", None, champion
        )
    if champion is not None and champion.version == challenger.version:
        return Decision(True, f"{challenger.label} is already the champion", challenger, champion)
    version = client.get_model_version(model_name, challenger.version)
    start, end = (
        pd.Timestamp(version.tags["holdout_start"]),
        pd.Timestamp(version.tags["holdout_end"]),
    )
    ts = windows["event_timestamp"]
    holdout = windows[(ts >= start) & (ts <= end)].reset_index(drop=True)
    if holdout.empty:
        return Decision(
            False, f"no held-out windows between {start} and {end}", challenger, champion
        )
    mine, _ = evaluate_version(store, challenger, holdout)
    if champion is None:
        promoted = mine.pr_auc >= min_pr_auc
        reason = (
            f"{challenger.label}: PR-AUC {mine.pr_auc:.3f} on {len(holdout)} held-out windows "
            f"{'>=' if promoted else '<'} the minimum {min_pr_auc:.3f}, and there is no champion yet"
        )
        theirs = None
    else:
        theirs_eval, _ = evaluate_version(store, champion, holdout)
        theirs = theirs_eval.pr_auc
        promoted = mine.pr_auc >= theirs + min_delta
        reason = (
            f"{challenger.label}: PR-AUC {mine.pr_auc:.3f} vs champion {champion.label} "
            f"{theirs:.3f} on the same {len(holdout)} held-out windows; "
            + (
                f"promoted (needs >= champion {min_delta:+.3f})"
                if promoted
                else f"not promoted: below champion {min_delta:+.3f} ({theirs + min_delta:.3f})"
            )
        )
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, challenger.version)
    client.set_model_version_tag(model_name, challenger.version, "promotion", reason)
    return Decision(promoted, reason, challenger, champion, mine.pr_auc, theirs, len(holdout))


@dataclass(frozen=True)
class Drift:
    ref: ModelRef
    psi: dict[str, float]
    threshold: float
    training_rows: int
    latest_rows: int
    latest_start: str
    run_id: str

    @property
    def drifted(self) -> list[str]:
        return sorted(f for f, v in self.psi.items() if v > self.threshold)


def drift(
    store: Any,
    client: Any,
    windows: pd.DataFrame,
    *,
    artifact_root: str,
    model_name: str,
    threshold: float,
    window_h: float,
) -> Drift:
    """Population stability index per feature of the production model (the champion, else the
    challenger): its training windows (from the training set logged with its run, so the
    reference survives a rebuilt lake) against the latest `window_h` hours. Logged to MLflow."""
    import mlflow
    import mlflow.artifacts

    ref = registry.by_alias(client, model_name, CHAMPION) or registry.by_alias(
        client, model_name, CHALLENGER
    )
    if ref is None:
        raise ValueError(f"no version of {model_name} has been trained yet")
    version = client.get_model_version(model_name, ref.version)
    start, end = pd.Timestamp(version.tags["train_start"]), pd.Timestamp(version.tags["train_end"])
    ts = windows["event_timestamp"]
    latest_start = ts.max() - pd.Timedelta(hours=window_h)
    names = features.feature_names(store, ref.feature_service)
    logged = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=ref.run_id, artifact_path="data/training_set.parquet"
        )
    )
    logged_ts = pd.to_datetime(logged["event_timestamp"], utc=True)
    trained = logged[(logged_ts >= start) & (logged_ts <= end)]
    latest = features.historical(store, ref.feature_service, windows[ts > latest_start])
    if trained.empty or latest.empty:
        raise ValueError(
            f"drift of {ref.label} needs training and latest windows; "
            f"got {len(trained)} and {len(latest)}"
        )
    scores = {name: model.psi(trained[name].to_numpy(), latest[name].to_numpy()) for name in names}
    experiment = registry.experiment(client, artifact_root, registry.DRIFT_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment, run_name=f"drift-{ref.label}") as run:
        mlflow.log_params(
            {
                "model_version": ref.label,
                "training_window": f"{start.isoformat()}..{end.isoformat()}",
                "latest_window_start": latest_start.isoformat(),
                "threshold": threshold,
            }
        )
        mlflow.log_metrics({f"psi_{k}": v for k, v in scores.items()})
        mlflow.log_metric("psi_max", max(scores.values()) if scores else 0.0)
        drifted = sorted(f for f, v in scores.items() if v > threshold)
        mlflow.set_tags({"drifted": ",".join(drifted) or "-", "model_version": ref.label})
    return Drift(
        ref, scores, threshold, len(trained), len(latest), latest_start.isoformat(), run.info.run_id
    )
