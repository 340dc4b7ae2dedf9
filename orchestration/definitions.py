"""The one Dagster entry point: merges the slices that each `defs/<domain>/` package returns.

Settings are read when Dagster loads the code location (the `@dg.definitions` function), not at
import time; tests call `build(Settings(...))` with their own.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from orchestration.defs import evals, features, ingest, lake, models, quality
from orchestration.lib.resources import build_resources
from sentinel.settings import Settings, get_settings


def executor_for(settings: Settings) -> Any:
    """The one place that branches on the environment: where steps run."""
    if settings.dagster_executor == "k8s":
        from dagster_k8s import k8s_job_executor

        # One pod per step, each sized for the heavy lake steps.
        return k8s_job_executor.configured({"step_k8s_config": lake.LAKE_STEP_K8S})
    if settings.dagster_executor == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor.configured({"max_concurrent": 2})


def build(settings: Settings, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The code location for `settings`; `resources` replaces the ones built from them."""
    merged = dg.Definitions.merge(
        *(domain.build(settings) for domain in (ingest, lake, quality, features, models, evals))
    )
    wired = dg.Definitions(
        resources=resources or build_resources(settings), executor=executor_for(settings)
    )
    return dg.Definitions.merge(merged, wired)


@dg.definitions
def defs() -> dg.Definitions:
    return build(get_settings())
