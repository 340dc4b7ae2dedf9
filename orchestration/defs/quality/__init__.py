"""Quality: the blocking Great Expectations gates on silver and gold."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.quality.checks import gate_checks
from orchestration.defs.quality.suites import GOLD_GATES, SILVER_GATES
from sentinel.settings import Settings


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        asset_checks=[gate_checks("silver", SILVER_GATES), gate_checks("gold", GOLD_GATES)]
    )
