"""Typed configuration from `SENTINEL_*` environment variables: the one place that reads them.

Nothing here runs at import time; call `get_settings()` (or build `Settings(...)` in tests) and
pass the object down.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_BOOTSTRAP = "127.0.0.1:9092"


class Settings(BaseSettings):
    """Every knob of the embedded stack. Defaults point at the embedded services under `.state/`."""

    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore")

    # --- paths
    state_dir: Path = Field(PROJECT_ROOT / ".state", description="runtime state of the stack")
    cache_dir: Path = Field(PROJECT_ROOT / ".cache", description="downloaded jars, build caches")

    # --- Kafka
    kafka_bootstrap: str = Field(
        EMBEDDED_BOOTSTRAP, description="bootstrap servers, comma-separated"
    )
    kafka_external: bool = Field(
        False, description="never manage a broker, even when the bootstrap is on loopback"
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version of the embedded broker")
    kafka_controller_port: int | None = Field(
        None, description="KRaft controller port of the embedded broker (default: broker port + 1)"
    )
    kafka_heap: str = Field("768m", description="JVM heap (-Xmx) of the embedded broker")
    kafka_start_timeout_s: float = Field(90.0, gt=0)
    kafka_partitions: int = Field(6, ge=1, description="partitions of the event and alert topics")
    kafka_client_id: str = "sentinel"

    # --- streams (Faust workers)
    rules_dir: Path = Field(PROJECT_ROOT / "rules", description="rule packs loaded at start-up")
    streams_app_id: str = Field(
        "sentinel-streams",
        description="Faust app id; the events topic is read by group '<app id>.detection'",
    )
    streams_web_host: str = "127.0.0.1"
    streams_web_port: int = Field(6066, description="worker web port (/health, /hosts/{id}/stats)")
    streams_batch_size: int = Field(1000, ge=1, description="events per detection batch")
    streams_batch_within_s: float = Field(0.1, gt=0, description="max wait to fill a batch")
    streams_commit_interval_s: float = Field(
        0.5,
        ge=0,
        description="offsets of published batches are committed this often (and when idle)",
    )
    streams_max_event_bytes: int = Field(
        256 * 1024, ge=1024, description="larger events go to the DLQ"
    )
    streams_warmup_s: float = Field(
        900.0, ge=0, description="event time replayed on partition assignment to rebuild windows"
    )
    streams_warmup_timeout_s: float = Field(
        60.0, gt=0, description="longest a partition's window warm-up may take before it is skipped"
    )
    streams_session_timeout_s: float = Field(
        10.0,
        ge=3,
        description="a worker that stops heartbeating leaves the Faust group after this long",
    )
    streams_stall_s: float = Field(
        150.0,
        gt=0,
        description="a detection loop that has not gone round this long is logged with its "
        "stacks and restarted (keep it above STREAMS_WARMUP_TIMEOUT_S)",
    )
    streams_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts on the events topic"
    )

    # --- enrichment (paths or http(s) URLs; None = the feeds shipped in streams/enrichment/feeds)
    enrichment_threat_intel: str | None = None
    enrichment_file_hashes: str | None = None
    enrichment_hosts: str | None = None
    enrichment_remote_url: str | None = Field(
        None, description="reputation service: GET {url}/{kind}/{key}; unset = local feeds only"
    )
    enrichment_remote_timeout_s: float | None = None
    enrichment_batch_deadline_s: float | None = None

    # --- lake (orchestration/: Dagster assets over the same topics)
    lake_dir: Path | None = Field(
        None, description="bronze/quarantine folders and lake.duckdb (default: <state_dir>/lake)"
    )
    lake_consumer_group: str = Field(
        "sentinel-lake", description="prefix of the landing consumer groups (<prefix>.<table>)"
    )
    lake_landing_workers: int = Field(
        2, ge=1, le=64, description="processes a landing run splits the partitions over"
    )
    lake_chunk_rows: int = Field(200_000, ge=1, description="rows buffered before a flush + commit")
    lake_lag_threshold: int = Field(
        10_000, ge=1, description="consumer lag (records) at which the sensor starts a landing"
    )
    lake_sensor_interval_s: int = Field(60, ge=5, description="how often the lag sensor looks")
    lake_automation: bool = Field(
        True, description="start the lag sensor and the hourly schedule with the code location"
    )
    lake_freshness_hours: float = Field(
        24.0, gt=0, description="gate: newest event at most this much older than the newest landing"
    )
    lake_future_skew_s: float = Field(
        300.0, ge=0, description="gate: event timestamps may run this far ahead of the clock"
    )
    lake_max_row_drop: float = Field(
        0.5, ge=0, le=1, description="gate: largest allowed fall in a table's rows between runs"
    )
    # --- features and models (feature_repo/, MLflow, streams/scoring)
    feast_dir: Path | None = Field(
        None,
        description="Feast registry, online store and Parquet exports (default: <state_dir>/feast)",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking and registry store (default: sqlite:///<state_dir>/mlflow/mlflow.db)",
    )
    mlflow_artifacts: str | None = Field(
        None, description="artifact root of new experiments (default: <state_dir>/mlflow/artifacts)"
    )
    models_name: str = Field(
        "host-anomaly", description="registered model of the host-anomaly models"
    )
    models_feature_service: str = Field(
        "host_anomaly_v1", description="Feast feature service a training run uses by default"
    )
    models_holdout_fraction: float = Field(
        0.3, gt=0, lt=1, description="newest share of the time range held out for evaluation"
    )
    models_promotion_min_delta: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="a challenger is promoted when its PR-AUC >= the champion's + this",
    )
    models_min_pr_auc: float = Field(
        0.0, ge=0, le=1, description="a first model (no champion yet) needs at least this PR-AUC"
    )
    models_drift_threshold: float = Field(
        0.25, gt=0, description="population stability index above which a feature has drifted"
    )
    models_drift_window_h: float = Field(
        1.0, gt=0, description="the latest window drift compares with the training window"
    )
    scoring_enabled: bool = Field(
        True, description="workers score hosts with the champion (and the challenger in shadow)"
    )
    scoring_interval_s: float = Field(
        1.0, gt=0, description="hosts with new events are scored this often, in one batch"
    )
    scoring_poll_s: float = Field(
        30.0, gt=0, description="how often workers ask the registry where the aliases point"
    )
    dagster_host: str = Field("127.0.0.1", description="where `sentinel dev` serves the Dagster UI")
    dagster_port: int = Field(3000, description="port of the Dagster UI of `sentinel dev`")
    dagster_executor: Literal["multiprocess", "in_process", "k8s"] = Field(
        "multiprocess",
        description="how Dagster runs the steps of lake jobs (k8s: one pod per step)",
    )

    # --- LLM gateway (services/gateway), alert triage (streams/triage), evaluations (evals/)
    gateway_host: str = Field("127.0.0.1", description="where `sentinel gateway serve` listens")
    gateway_port: int = Field(8088, description="port of `sentinel gateway serve`")
    gateway_config: Path | None = Field(
        None,
        description="gateway.yaml: upstreams, models, fallbacks, redaction (default: services/gateway/gateway.yaml)",
    )
    gateway_db_url: str | None = Field(
        None,
        description="API keys and usage: sqlite:///... or postgresql://... (default: sqlite:///<state_dir>/gateway/gateway.db)",
    )
    gateway_url: str | None = Field(
        None,
        description="where clients (triage, evals) reach the gateway (default: http://host:port)",
    )
    gateway_api_key: str | None = Field(
        None,
        description="the key triage and evals present; `gateway serve` registers it (all models) when set",
    )
    triage_enabled: bool = Field(
        True, description="workers send high-severity alerts to the gateway"
    )
    triage_min_severity: Literal["low", "medium", "high", "critical"] = Field(
        "high", description="alerts at or above this severity are triaged"
    )
    triage_model: str = Field("extractive-triage", description="gateway model that triages alerts")
    triage_prompt: str = Field(
        "triage-v1", description="prompt id under streams/triage/prompts/ used by workers"
    )
    triage_timeout_s: float = Field(30.0, gt=0, description="one gateway call's time limit")
    triage_max_attempts: int = Field(
        4, ge=1, description="gateway calls per alert before it is marked failed"
    )
    triage_retry_backoff_s: float = Field(
        1.0, ge=0, description="first retry delay; doubles on every further attempt"
    )
    triage_concurrency: int = Field(4, ge=1, description="alerts in triage at once per worker")
    evals_dir: Path | None = Field(
        None, description="evaluation reports and accepted baselines (default: <state_dir>/evals)"
    )
    evals_models: str = Field(
        "extractive-triage:triage-v1,extractive-triage:triage-terse",
        description="variants the nightly evaluation compares: comma-separated model:prompt",
    )
    evals_judge_model: str | None = Field(
        None,
        description="gateway model for LLM-judge metrics (faithfulness, relevancy); unset = skipped",
    )

    # --- policy (services/policy: signed packs, deploy, RBAC, audit, HTTP ingest)
    policy_host: str = Field("127.0.0.1", description="where `sentinel policy serve` listens")
    policy_port: int = Field(8089, description="port of `sentinel policy serve`")
    policy_db_url: str | None = Field(
        None,
        description="packs, users, audit: sqlite:///... or postgresql://... (default: sqlite:///<state_dir>/policy/policy.db)",
    )
    policy_signing_key: Path | None = Field(
        None,
        description="Ed25519 private key file the service signs approved packs with (default: <state_dir>/policy/keys/, created on first start)",
    )
    policy_bootstrap_admin_key: str | None = Field(
        None, description="API key of an 'admin' user created on start when no admin exists"
    )
    policy_rules_topic: str = Field(
        "sentinel.rules.v1", description="where deployments publish signed packs"
    )
    policy_heartbeats_topic: str = Field(
        "sentinel.heartbeats.v1",
        description="the workers' and agents' heartbeats the service follows",
    )
    policy_follow_heartbeats: bool = Field(
        True, description="follow the heartbeats topic while the service runs"
    )
    policy_events_topic: str = Field(
        "sentinel.events.v1", description="where POST /ingest produces the valid events"
    )
    policy_ingest_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest POST /ingest body (413 above)"
    )
    policy_ingest_max_events: int = Field(
        10_000, ge=1, description="most events in one POST /ingest batch (413 above)"
    )
    policy_upload_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest pack upload (413 above)"
    )
    rules_trusted_keys: Path | None = Field(
        None,
        description="public key file or folder of *.pub; when set, workers and agents run only packs signed by one of them",
    )
    rules_allowed_capabilities: str = Field(
        "enrich", description="capabilities a signed pack's rules may ask for, comma-separated"
    )
    rules_groups: str = Field(
        "",
        description="deployment groups this worker or agent belongs to (comma-separated), e.g. canary",
    )

    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="how often workers and agents report the pack versions they run"
    )

    # --- observability (sentinel/tracing.py, the /metrics endpoints; docs/observability.md)
    otel_exporter: Literal["file", "otlp", "none"] = Field(
        "file",
        description="where spans go: JSON Lines under traces_dir, an OTLP collector, or nowhere",
    )
    otel_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces"
    )
    otel_service_name: str | None = Field(
        None, description="service.name of every span of this process (default: per process)"
    )
    otel_flush_interval_s: float = Field(
        2.0, gt=0, description="spans are exported in batches at most this long after they end"
    )
    traces_dir: Path | None = Field(
        None, description="span files of the file exporter (default: <state_dir>/traces)"
    )

    # --- logging
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"'{server}' is not host:port (SENTINEL_KAFKA_BOOTSTRAP)")
        return value

    # --- derived
    @property
    def kafka_state_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def kafka_embedded(self) -> bool:
        """True when this project manages the broker: one loopback server and not marked external."""
        servers = [s.strip() for s in self.kafka_bootstrap.split(",")]
        if self.kafka_external or len(servers) != 1:
            return False
        host = servers[0].rpartition(":")[0].strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def lake_root(self) -> Path:
        return self.lake_dir or self.state_dir / "lake"

    @property
    def feast_root(self) -> Path:
        return self.feast_dir or self.state_dir / "feast"

    @property
    def mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_root(self) -> str:
        if self.mlflow_artifacts:
            return self.mlflow_artifacts
        return (self.state_dir / "mlflow" / "artifacts").resolve().as_uri()

    @property
    def gateway_root(self) -> Path:
        return self.state_dir / "gateway"

    @property
    def gateway_database_url(self) -> str:
        if self.gateway_db_url:
            return sqlalchemy_url(self.gateway_db_url)
        return f"sqlite:///{(self.gateway_root / 'gateway.db').resolve()}"

    @property
    def gateway_base_url(self) -> str:
        """Base URL of the OpenAI-compatible API, without the /v1 suffix."""
        return (self.gateway_url or f"http://{self.gateway_host}:{self.gateway_port}").rstrip("/")

    @property
    def policy_root(self) -> Path:
        return self.state_dir / "policy"

    @property
    def policy_database_url(self) -> str:
        if self.policy_db_url:
            return sqlalchemy_url(self.policy_db_url)
        return f"sqlite:///{(self.policy_root / 'policy.db').resolve()}"

    @property
    def rules_capabilities(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.rules_allowed_capabilities.split(",") if c.strip())

    @property
    def rules_group_set(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.rules_groups.split(",") if g.strip())

    @property
    def evals_root(self) -> Path:
        return self.evals_dir or self.state_dir / "evals"

    @property
    def traces_root(self) -> Path:
        return self.traces_dir or self.state_dir / "traces"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def streams_detection_group(self) -> str:
        """The consumer group that reads the events topic (the Faust app id is the other group)."""
        return f"{self.streams_app_id}.detection"

    @property
    def streams_dir(self) -> Path:
        return self.state_dir / "streams"

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.split(",")[0].strip().rpartition(":")[0].strip("[]")

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])

    @property
    def kafka_controller(self) -> int:
        return self.kafka_controller_port or self.kafka_port + 1


def sqlalchemy_url(url: str) -> str:
    """A database URL as SQLAlchemy should open it: `postgresql://` (or `postgres://`) means the
    psycopg 3 driver the project ships, not SQLAlchemy's default psycopg2."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
