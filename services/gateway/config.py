"""gateway.yaml: the typed configuration of the LLM gateway (upstreams, models, redaction, logs).

Unknown keys are errors, so a typo is reported with the file and field instead of being ignored.
`services/gateway/gateway.yaml` is the embedded default; `SENTINEL_GATEWAY_CONFIG` or
`sentinel gateway serve --config FILE` names another. Upstream API keys are read from the
environment variables the file names, here and nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from sentinel.settings import PROJECT_ROOT, Settings

DEFAULT_CONFIG = PROJECT_ROOT / "services" / "gateway" / "gateway.yaml"


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreakerConfig(_Strict):
    failure_threshold: int = Field(
        5, ge=1, description="consecutive failed calls that open the circuit"
    )
    open_s: float = Field(30.0, ge=0, description="open this long, then one trial call (half-open)")


class UpstreamConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["openai", "extractive"]
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL including /v1 (kind openai)"
    )
    api_key_env: str | None = Field(
        None, description="environment variable holding this upstream's API key"
    )
    enabled: bool = Field(True, description="a disabled upstream is skipped by every model")
    timeout_s: float = Field(30.0, gt=0, description="one call's time limit (streams: per read)")
    connect_timeout_s: float = Field(2.0, gt=0)
    max_retries: int = Field(
        2, ge=0, description="retries after connect errors, 5xx and 429 (not other 4xx)"
    )
    backoff_s: float = Field(0.2, ge=0, description="first retry delay; doubles each retry")
    max_connections: int = Field(256, ge=1, description="pooled connections to this upstream")
    transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="how upstream calls are made: aiohttp's client under httpx (fast), or httpx's own",
    )
    breaker: BreakerConfig = BreakerConfig()
    _api_key: str | None = PrivateAttr(None)

    @property
    def api_key(self) -> str | None:
        """The key read from `api_key_env` when the configuration was loaded."""
        return self._api_key

    @model_validator(mode="after")
    def _openai_needs_url(self) -> UpstreamConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"upstream '{self.name}' of kind openai needs base_url")
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url '{self.base_url}' must start with http:// or https://")
        return self


class Capabilities(_Strict):
    tools: bool = Field(False, description="targets accept `tools` / `tool_choice`")


class TargetConfig(_Strict):
    upstream: str = Field(description="name of an upstream")
    model: str = Field(description="the model name the upstream knows")
    tools: bool | None = Field(None, description="overrides the model's tools capability")


class ModelConfig(_Strict):
    description: str = ""
    targets: list[TargetConfig] = Field(min_length=1, description="tried in order (fallbacks)")
    capabilities: Capabilities = Capabilities()

    def target_has_tools(self, target: TargetConfig) -> bool:
        return self.capabilities.tools if target.tools is None else target.tools


# Always on, whatever the file says: credentials must never reach a log.
ALWAYS_REDACTED_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "cookie")
ALWAYS_REDACTED_PATTERNS = (
    r"sk-[A-Za-z0-9_\-]{6,}",
    r"sgw-[A-Za-z0-9_\-]{24,}",  # a whole gateway key (its 12-character prefix stays visible)
    r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+",
)


# Defaults of `redaction.fields` and `redaction.patterns` (a file that sets them replaces them).
DEFAULT_REDACTED_FIELDS = (
    "password",
    "passwd",
    "api_key",
    "apikey",
    "secret",
    "token",
    "access_token",
    "client_secret",
)
DEFAULT_REDACTED_PATTERNS = (
    r"(?i)\b(password|passwd|pwd)\s*[=:]\s*\S+",
    r"AKIA[0-9A-Z]{16}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
)


class RedactionConfig(_Strict):
    replacement: str = "[REDACTED]"
    headers: list[str] = Field(
        default_factory=list, description="extra header names (case-insensitive)"
    )
    fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REDACTED_FIELDS),
        description="JSON field names redacted wherever they occur (e.g. password, api_key)",
    )
    paths: list[str] = Field(
        default_factory=list,
        description="dotted JSON paths, `*` for any list item or key (e.g. messages.*.content)",
    )
    patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REDACTED_PATTERNS),
        description="regular expressions whose matches are redacted",
    )

    @model_validator(mode="after")
    def _patterns_compile(self) -> RedactionConfig:
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from None
        return self


class LogConfig(_Strict):
    requests_file: str = Field(
        "requests.jsonl", description="request log, relative to the gateway state folder"
    )
    request_body: bool = Field(True, description="log the (redacted) request body")
    response_body: bool = Field(True, description="log the (redacted) non-streamed response")


class ToolsConfig(_Strict):
    max_rounds: int = Field(
        4, ge=1, le=16, description="upstream calls answered with sentinel tool results"
    )
    timeline_limit: int = Field(50, ge=1, le=1000, description="events host_timeline returns")


class GatewayConfig(_Strict):
    upstreams: list[UpstreamConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    redaction: RedactionConfig = RedactionConfig()
    logs: LogConfig = LogConfig()
    tools: ToolsConfig = ToolsConfig()
    usage_flush_s: float = Field(1.0, gt=0, description="usage counters reach the DB this often")
    key_cache_s: float = Field(
        5.0, ge=0, description="a revoked or changed key takes effect within this"
    )
    source: str = Field("<memory>", exclude=True, description="the file it came from")

    @model_validator(mode="after")
    def _targets_known(self) -> GatewayConfig:
        names = [u.name for u in self.upstreams]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"upstream names must be unique: {', '.join(duplicated)}")
        for model, spec in self.models.items():
            for i, target in enumerate(spec.targets):
                if target.upstream not in names:
                    raise ValueError(
                        f"models.{model}.targets.{i}.upstream: unknown upstream "
                        f"'{target.upstream}' (known: {', '.join(names)})"
                    )
        return self

    def upstream(self, name: str) -> UpstreamConfig:
        return next(u for u in self.upstreams if u.name == name)

    def requests_log(self, settings: Settings) -> Path:
        path = Path(self.logs.requests_file)
        return path if path.is_absolute() else settings.gateway_root / path


def config_path(settings: Settings, path: Path | None = None) -> Path:
    return path or settings.gateway_config or DEFAULT_CONFIG


def parse_config(
    raw: Any, source: str = "<memory>", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate a mapping (as read from YAML) and resolve the upstreams' API keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(raw).__name__}")
    try:
        config = GatewayConfig.model_validate({**raw, "source": source})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    env = os.environ if environ is None else environ
    for upstream in config.upstreams:
        if upstream.api_key_env:
            upstream._api_key = env.get(upstream.api_key_env) or None
    return config


def load_config(
    settings: Settings, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read gateway.yaml: `path`, else `SENTINEL_GATEWAY_CONFIG`, else the embedded default."""
    source = config_path(settings, path)
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return parse_config(raw, str(source), environ)
