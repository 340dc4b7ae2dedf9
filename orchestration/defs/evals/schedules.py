"""The nightly evaluation job and its 02:00 UTC schedule."""

from __future__ import annotations

import dagster as dg

from sentinel.settings import Settings

nightly_evals = dg.define_asset_job(
    "nightly_evals",
    selection=dg.AssetSelection.assets("triage_eval_report"),
    description="evaluate LLM triage on the golden dataset and gate it",
    tags={"sentinel/job": "nightly_evals"},
)


def nightly_evals_schedule(settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="nightly_evals_schedule",
        job=nightly_evals,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.lake_automation
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="the triage evaluation every night, on the prompts and models of the day",
    )
