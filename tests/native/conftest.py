"""Fixtures for the native rule engine tests, and the hypothesis profiles `make fuzz` uses."""

from __future__ import annotations

import pytest
import sentinel_rhai
from hypothesis import HealthCheck, settings

# `make fuzz` selects "fuzz"; the default keeps `make test` quick.
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")


@pytest.fixture
def engine() -> sentinel_rhai.RuleEngine:
    return sentinel_rhai.RuleEngine()
