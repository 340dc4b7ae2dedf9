"""Landing assets: each lands what is new on its topic into bronze Parquet (group `ingest`)."""

from datetime import timedelta
from typing import Any

import dagster as dg

from orchestration.lib.landing import LandingReport, land
from orchestration.lib.resources import KafkaResource, LakeResource

BRONZE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=2), warn_window=timedelta(hours=1)
)
DESCRIPTIONS = {
    "events": "Every valid sensor event from sentinel.events.v1, as received, by event hour.",
    "alerts": "Every alert the detection workers raised (sentinel.alerts.v1), by alert hour.",
    "dlq": "Dead letters (sentinel.events.dlq.v1): the original bytes and why they failed.",
}


def report_metadata(report: LandingReport) -> dict[str, Any]:
    rate = report.records / report.elapsed_s if report.elapsed_s > 0 else 0.0
    return {
        "dagster/row_count": report.rows,
        "rows": report.rows,
        "rejected": report.rejected,
        "bytes": report.bytes,
        "files": len(report.files),
        "offset_ranges": report.offset_ranges(),
        "lag": report.lag,
        "expired_offsets": report.expired,
        "removed_orphan_files": len(report.removed_orphans),
        "consumer_group": report.group,
        "elapsed_s": round(report.elapsed_s, 3),
        "records_per_s": round(rate),
    }


def bronze_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"bronze_{table}",
        group_name="ingest",
        kinds={"kafka", "parquet"},
        description=DESCRIPTIONS[table],
        freshness_policy=BRONZE_FRESHNESS,
    )
    def _bronze(
        context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource
    ) -> dg.MaterializeResult[Any]:
        job = lake.landing_job(table, kafka)
        step = [0.0]

        def progress(read: int, total: int) -> None:
            if total and read / total >= step[0]:
                context.log.info(f"landing {job.topic}: {read:,} of {total:,} records")
                step[0] += 0.25

        report = land(job, workers=lake.landing_workers, progress=progress)
        if report.expired:
            context.log.warning(
                f"{report.expired:,} offsets of {job.topic} expired (retention) before they were landed"
            )
        if report.removed_orphans:
            context.log.warning(
                f"removed {len(report.removed_orphans)} files of a landing that did not finish; "
                "their records were landed again"
            )
        context.log.info(
            f"landed {report.rows:,} rows ({report.rejected:,} rejected to quarantine) from "
            f"{job.topic} in {report.elapsed_s:.1f}s; lag now {report.lag:,}"
        )
        return dg.MaterializeResult(metadata=report_metadata(report))

    return _bronze


bronze_events = bronze_asset("events")
bronze_alerts = bronze_asset("alerts")
bronze_dlq = bronze_asset("dlq")
BRONZE_ASSETS = [bronze_events, bronze_alerts, bronze_dlq]
