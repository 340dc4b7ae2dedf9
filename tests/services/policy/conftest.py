"""The policy service on real HTTP over the session broker, with private topics per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sentinel.settings import Settings
from tests.services.policy.policytest import Service, policy_settings, serve
from tests.streams.conftest import stream_env

__all__ = ["stream_env"]  # real worker processes on a private broker (tests/streams)


@pytest.fixture
def service(tmp_path: Path, kafka: Settings, new_topic: Callable[..., str]) -> Iterator[Service]:
    settings = policy_settings(
        tmp_path / "state",
        kafka,
        policy_rules_topic=new_topic(partitions=1, prefix="test-rules"),
        policy_events_topic=new_topic(partitions=3, prefix="test-events"),
        policy_heartbeats_topic=new_topic(partitions=1, prefix="test-heartbeats"),
    )
    with serve(settings) as running:
        yield running


@pytest.fixture
def team(service: Service) -> dict[str, str]:
    """name -> API key: two authors, two approvers, a deployer, a viewer and an agent."""
    roles = {
        "alice": "author",
        "bob": "approver",
        "carol": "approver",
        "dave": "deployer",
        "vera": "viewer",
        "agent-1": "agent",
    }
    return {name: service.user(name, role) for name, role in roles.items()}
