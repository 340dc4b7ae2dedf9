"""Triage of one alert through the gateway: evidence → prompt → call with retries → triage record.

Kept free of Faust so it can be driven by the worker's service, the evaluations and the tests alike.
A gateway failure never raises out of here: after the last attempt the alert gets a `failed`
triage record that says why, and the alert itself is untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from sentinel.logs import get_logger
from sentinel.settings import Settings
from streams.triage.prompts import Prompt, TriageFormatError, build_messages, parse_triage

log = get_logger(__name__)

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
# Answers worth a retry: the gateway or its upstreams are down, slow or rate-limited.
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wants_triage(alert: dict[str, Any], min_severity: str) -> bool:
    rank = SEVERITY_RANK.get(str(alert.get("severity")), -1)
    return rank >= SEVERITY_RANK[min_severity]


class TriageFailure(Exception):
    """A gateway answer that will not improve with a retry (or the last retry's reason)."""

    def __init__(self, reason: str, *, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry, self.retry_after_s = reason, retry, retry_after_s


@dataclass
class TriageStats:
    triaged: int = 0
    failed: int = 0
    retries: int = 0
    skipped_below_severity: int = 0
    duplicates: int = 0
    last_error: str | None = None


class GatewayTriage:
    """Calls the gateway's chat completions for alerts; one instance per worker."""

    def __init__(
        self,
        settings: Settings,
        prompt: Prompt,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.prompt = prompt
        self.url = f"{settings.gateway_base_url}/v1/chat/completions"
        self.client = client or httpx.AsyncClient(timeout=settings.triage_timeout_s)
        self.sleep = sleep
        self.stats = TriageStats()

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(
        self, alert: dict[str, Any], evidence: dict[str, Any], traceparent: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        headers = {"X-Sentinel-Rule": str(alert["rule"]["id"])}
        if self.settings.gateway_api_key:
            headers["Authorization"] = f"Bearer {self.settings.gateway_api_key}"
        if traceparent:
            headers["traceparent"] = traceparent
        body = {
            "model": self.settings.triage_model,
            "messages": build_messages(self.prompt, evidence),
            "temperature": 0,
        }
        try:
            response = await self.client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TriageFailure(f"gateway unreachable: {exc!r}", retry=True) from None
        if response.status_code != 200:
            message = _error_message(response)
            retry_after = _retry_after(response)
            raise TriageFailure(
                f"gateway answered {response.status_code}: {message}",
                retry=response.status_code in RETRY_STATUSES,
                retry_after_s=retry_after,
            )
        try:
            completion = response.json()
            content = completion["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TriageFailure("gateway answer is not a chat completion", retry=True) from None
        try:
            answer = parse_triage(str(content or ""))
        except TriageFormatError as exc:
            # A model that answers off-format at temperature 0 will do it again.
            raise TriageFailure(f"answer is not triage JSON: {exc}", retry=False) from None
        meta = {
            "model": completion.get("model") or self.settings.triage_model,
            "provider": response.headers.get("x-sentinel-upstream"),
            # The gateway says which upstream answered and how many failed before it.
            "fallback": response.headers.get("x-sentinel-fallbacks", "0") not in ("", "0"),
            "usage": completion.get("usage") or {},
        }
        return answer.as_dict(), meta

    async def triage(
        self, alert: dict[str, Any], evidence: dict[str, Any], traceparent: str | None = None
    ) -> dict[str, Any]:
        """A triage record (contract `sentinel.triage/1`) for `alert`: triaged or failed."""
        started = time.perf_counter()
        delay = self.settings.triage_retry_backoff_s
        attempts = 0
        reason = ""
        while attempts < self.settings.triage_max_attempts:
            attempts += 1
            try:
                answer, meta = await self._call(alert, evidence, traceparent)
            except TriageFailure as failure:
                reason = failure.reason
                if not failure.retry or attempts >= self.settings.triage_max_attempts:
                    break
                self.stats.retries += 1
                wait = delay
                if failure.retry_after_s is not None:
                    wait = min(max(wait, failure.retry_after_s), MAX_RETRY_AFTER_S)
                log.warning(
                    "triage attempt failed; retrying",
                    alert_id=alert["id"],
                    attempt=attempts,
                    retry_in_s=wait,
                    reason=reason,
                )
                await self.sleep(wait)
                delay *= 2
                continue
            self.stats.triaged += 1
            record = self._record(alert, attempts, started)
            record.update(answer)
            record["status"] = "triaged"
            model: dict[str, Any] = {
                "name": str(meta["model"]),
                "prompt_version": f"{self.prompt.id}@{self.prompt.version}",
                "fallback": bool(meta["fallback"]),
            }
            if meta["provider"]:
                model["provider"] = str(meta["provider"])
            record["model"] = model
            usage = meta["usage"]
            if isinstance(usage, dict):
                record["usage"] = {
                    k: int(usage[k])
                    for k in ("prompt_tokens", "completion_tokens")
                    if isinstance(usage.get(k), int)
                }
            return record
        self.stats.failed += 1
        self.stats.last_error = reason
        log.error("triage failed", alert_id=alert["id"], attempts=attempts, reason=reason)
        record = self._record(alert, attempts, started)
        record.update(
            status="failed",
            error=f"{reason} (after {attempts} attempt{'s' if attempts > 1 else ''})",
            verdict="needs_review",
            confidence=0.0,
            summary="Triage failed; the alert stands and needs an analyst.",
            model={
                "name": self.settings.triage_model,
                "prompt_version": f"{self.prompt.id}@{self.prompt.version}",
            },
        )
        return record

    def _record(self, alert: dict[str, Any], attempts: int, started: float) -> dict[str, Any]:
        return {
            "schema": "sentinel.triage/1",
            "alert_id": alert["id"],
            "ts": now_iso(),
            "attempts": attempts,
            "rule_id": str(alert["rule"]["id"]),
            "severity": alert["severity"],
            "host_id": str(alert["host"]["id"]),
            "prompt": self.prompt.ref,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except ValueError:
        pass
    return response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
