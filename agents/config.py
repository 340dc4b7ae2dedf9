"""agent.yaml: the typed configuration of one host agent (`sentinel agent run --config FILE`).

Kafka connection details come from the `SENTINEL_*` settings like every other process; this file
says what the agent watches and how it queues. Unknown keys are errors, so a typo is reported
instead of silently ignored. `agents/agent.yaml` is the embedded default.
"""

from __future__ import annotations

import platform
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentinel.kafka import EVENTS, RULES
from sentinel.settings import PROJECT_ROOT, Settings

Kind = Literal["proc", "file", "net", "dns", "auth"]
DEFAULT_CONFIG = PROJECT_ROOT / "agents" / "agent.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostConfig(_Strict):
    id: str | None = Field(None, description="host id (the Kafka key); default: the host name")
    name: str | None = Field(None, description="display name; default: the host name")


class KindPolicy(_Strict):
    sample: float = Field(1.0, gt=0, le=1, description="fraction of this kind's events kept")
    on_full: Literal["block", "drop"] = Field(
        "block",
        description="when the in-memory queue is full: block the sensor (backpressure) or drop",
    )


class SpoolConfig(_Strict):
    dir: Path | None = Field(None, description="default: <state>/agent/<host id>/spool")
    segment_mb: float = Field(8, gt=0)
    max_mb: float = Field(512, gt=0, description="size cap; the oldest segment is dropped beyond")
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_s: float = Field(0.2, gt=0)


class RulesConfig(_Strict):
    follow: bool = Field(True, description="apply agent-side filters of the packs on the topic")
    topic: str = RULES


class AgentConfig(_Strict):
    host: HostConfig = HostConfig()
    topic: str = Field(EVENTS, description="where events are published")
    queue_size: int = Field(10_000, ge=1, description="events held in memory before the spool")
    batch_size: int = Field(
        1000, ge=1, le=2000, description="events per spool write and per Kafka chunk (one batch)"
    )
    max_event_bytes: int = Field(256 * 1024, ge=1024, description="larger events are rejected")
    stats_interval_s: float = Field(10.0, gt=0)
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics on this port; off when unset"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics server binds")
    shutdown_timeout_s: float = Field(10.0, ge=0, description="time to ship the spool on stop")
    kinds: dict[Kind, KindPolicy] = Field(default_factory=dict)
    spool: SpoolConfig = SpoolConfig()
    rules: RulesConfig = RulesConfig()
    sensors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="sensor name -> its options ({} for the defaults)"
    )

    # -- derived ----------------------------------------------------------------------------
    @property
    def host_id(self) -> str:
        return self.host.id or socket.gethostname()

    @property
    def host_name(self) -> str:
        return self.host.name or socket.gethostname()

    def host_identity(self) -> dict[str, str]:
        system = platform.system().lower()
        os_name = {"linux": "linux", "windows": "windows", "darwin": "darwin"}.get(system, "linux")
        return {"id": self.host_id, "name": self.host_name, "os": os_name}

    def policy(self, kind: str) -> KindPolicy:
        found = self.kinds.get(kind)  # type: ignore[call-overload]
        return found if isinstance(found, KindPolicy) else _DEFAULT_POLICY

    def agent_dir(self, settings: Settings) -> Path:
        return settings.state_dir / "agent" / _safe(self.host_id)

    def spool_dir(self, settings: Settings) -> Path:
        return self.spool.dir or self.agent_dir(settings) / "spool"


_DEFAULT_POLICY = KindPolicy()


class ConfigError(ValueError):
    pass


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "host"


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read and validate agent.yaml (the embedded default when `path` is None)."""
    source = path or DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read agent config {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(raw).__name__}")
    raw.update(overrides or {})
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc
