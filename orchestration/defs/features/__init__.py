"""Features: the Feast repository applied over the gold export, and the online store filled."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.features.assets import feast_repository, online_features
from sentinel.settings import Settings


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=[feast_repository, online_features])
