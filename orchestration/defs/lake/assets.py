"""The dbt models as assets: silver (typed, deduplicated) then gold (features and roll-ups).

Two dbt invocations, so the blocking gates on silver run between them: a failed silver gate
keeps gold from being built on bad data.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.lib.dbt import SentinelDbtTranslator, dbt_project
from orchestration.lib.resources import LakeResource

TRANSLATOR = SentinelDbtTranslator()


def dbt_model_assets(manifest: Path) -> list[dg.AssetsDefinition]:
    """The silver and gold model assets of `manifest` (see `ensure_manifest`)."""

    @dbt_assets(
        manifest=manifest,
        select="path:models/silver",
        name="silver_models",
        project=dbt_project,
        dagster_dbt_translator=TRANSLATOR,
    )
    def silver_models(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource
    ) -> Iterator[Any]:
        lake.register_views()  # bronze views over the landed Parquet, typed even when empty
        with lake.dbt_environment():
            yield from dbt.cli(["build"], context=context).stream()

    @dbt_assets(
        manifest=manifest,
        select="path:models/gold",
        name="gold_models",
        project=dbt_project,
        dagster_dbt_translator=TRANSLATOR,
    )
    def gold_models(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource
    ) -> Iterator[Any]:
        with lake.dbt_environment():
            yield from dbt.cli(["build"], context=context).stream()

    return [silver_models, gold_models]
