"""MLflow: the tracking store, the `host-anomaly` registered model and its two aliases.

`challenger` is the newest trained version; `champion` the one that scores in production. A
version carries the tags scoring needs (`feature_service`, `threshold`) and those that explain it
(`pr_auc`, `promotion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "host-anomaly"
DRIFT_EXPERIMENT = "host-anomaly-drift"


def configure(uri: str) -> Any:
    """Point this process's MLflow at the store `uri` (Settings.mlflow_uri); the client."""
    import mlflow
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment(client: Any, artifact_root: str, name: str = EXPERIMENT) -> str:
    """The id of experiment `name`, created with its artifacts under `artifact_root` if new."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=f"{artifact_root}/{name}"))


@dataclass(frozen=True)
class ModelRef:
    """A registered version and what scoring needs to know about it."""

    name: str
    version: str
    run_id: str
    feature_service: str
    threshold: float
    pr_auc: float | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def ref_of(version: Any) -> ModelRef:
    tags = version.tags or {}
    pr_auc = tags.get("pr_auc")
    return ModelRef(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or "",
        feature_service=tags["feature_service"],
        threshold=float(tags["threshold"]),
        pr_auc=float(pr_auc) if pr_auc is not None else None,
    )


def by_alias(client: Any, name: str, alias: str) -> ModelRef | None:
    """The version `alias` points at, or None (no such model or alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return ref_of(client.get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def by_version(client: Any, name: str, version: str) -> ModelRef:
    return ref_of(client.get_model_version(name, version))


def load(ref: ModelRef) -> Any:
    """The fitted pipeline of `ref` (configure() first)."""
    import mlflow.sklearn

    # The types trusted at logging time are recorded with the model and trusted again here.
    return mlflow.sklearn.load_model(ref.uri)
