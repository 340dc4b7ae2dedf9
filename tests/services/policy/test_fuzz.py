"""Schemathesis over the OpenAPI spec on real HTTP: no input makes the service answer 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from sentinel.kafka import TopicSpec, create_topics
from sentinel.kafka.clients import admin_client
from sentinel.settings import Settings
from services.policy.packs import folder_files
from tests.services.policy.policytest import ADMIN_KEY, policy_settings, serve, write_pack


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, kafka: Settings) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("fuzz")
    topics = ["test-rules.fuzz-" + tmp.name, "test-events.fuzz-" + tmp.name]
    admin = admin_client(kafka)
    create_topics(admin, [TopicSpec(topics[0], 1), TopicSpec(topics[1], 3)])
    admin.close()
    config = policy_settings(
        tmp / "state", kafka, policy_rules_topic=topics[0], policy_events_topic=topics[1]
    )
    with serve(config) as service:
        with service.client(ADMIN_KEY) as admin_http:  # something real for the paths to hit
            admin_http.post("/packs", json={"name": "tiny"})
            files = folder_files(write_pack(tmp, "1.0.0"))
            admin_http.post("/packs/tiny/versions", json={"files": files})
        yield schemathesis.openapi.from_url(f"{service.url}/openapi.json")


def test_no_input_makes_the_service_fail(api: Any) -> None:
    """Every operation, bounded examples each (derandomized, so a failure reproduces)."""
    checked: list[str] = []
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def call(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        call()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert not failures, failures[:5]
    assert len(checked) == sum(len(methods) for methods in api.raw_schema["paths"].values())
    assert len(checked) == 22
