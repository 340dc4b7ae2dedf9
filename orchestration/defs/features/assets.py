"""Feast assets: export gold.host_features_5m and `feast apply`, then materialize incrementally.

Both run in `lake_hourly` after the gold gates: `host_features_5m`'s gate is blocking, so a
failed gate keeps bad rows out of the online store and out of training.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from orchestration.lib.resources import LakeResource, ModelsResource
from sentinel.ml import features


def _iso(ts: datetime | None) -> str:
    return ts.isoformat() if ts else "-"


@dg.asset(
    group_name="features",
    deps=[dg.AssetKey("host_features_5m")],
    description="gold.host_features_5m exported to Parquet and the feature_repo/ definitions applied",
    kinds={"feast", "parquet"},
)
def feast_repository(
    context: dg.AssetExecutionContext, lake: LakeResource, models: ModelsResource
) -> dg.MaterializeResult[Any]:
    con = lake.connect(read_only=True)
    try:
        export = features.export_gold(models.feast_root, con)
    finally:
        con.close()
    store = models.store()
    views = features.apply(store)
    services = sorted(s.name for s in store.list_feature_services())
    context.log.info(f"exported {export.rows:,} rows to {export.path}; views {', '.join(views)}")
    return dg.MaterializeResult(
        metadata={
            "feature_views": views,
            "feature_services": services,
            "rows_exported": export.rows,
            "hosts": export.hosts,
            "newest_window_end": _iso(export.newest),
            "path": dg.MetadataValue.path(str(export.path)),
        }
    )


@dg.asset(
    group_name="features",
    deps=[feast_repository],
    description="incremental materialization of the feature views into the online store",
    kinds={"feast", "sqlite"},
)
def online_features(
    context: dg.AssetExecutionContext, models: ModelsResource
) -> dg.MaterializeResult[Any]:
    store = models.store()
    done = features.materialize(models.feast_root, store)
    now = datetime.now(UTC)
    age = (now - done.newest).total_seconds() / 60 if done.newest else None
    context.log.info(
        f"materialized {done.rows:,} host rows over {len(done.views)} views "
        f"({_iso(done.start)} .. {_iso(done.end)})"
    )
    metadata: dict[str, Any] = {
        "feature_views": done.views,
        "rows_materialized": done.rows,
        "hosts": done.hosts,
        "interval_start": _iso(done.start),
        "interval_end": _iso(done.end),
        "newest_online_window_end": _iso(done.newest),
    }
    if age is not None:
        metadata["freshness_minutes"] = dg.MetadataValue.float(round(age, 2))
    return dg.MaterializeResult(metadata=metadata)
