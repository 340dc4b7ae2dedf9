"""Evals: the nightly LLM triage evaluation, its gate and its schedule."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.evals.assets import build_eval_asset
from orchestration.defs.evals.schedules import nightly_evals, nightly_evals_schedule
from sentinel.settings import Settings


def build(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[build_eval_asset(settings)],
        jobs=[nightly_evals],
        schedules=[nightly_evals_schedule(settings)],
    )
