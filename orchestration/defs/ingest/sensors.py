"""The lag sensor: start a landing as soon as enough records wait in Kafka."""

from typing import Any

import dagster as dg

from orchestration.lib.resources import KafkaResource, LakeResource


def bronze_lag_sensor_for(
    job: Any, threshold: int, interval_s: int, running: bool
) -> dg.SensorDefinition:
    @dg.sensor(
        name="bronze_lag_sensor",
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description=f"lands bronze when the landing consumer groups lag {threshold:,}+ records",
    )
    def bronze_lag_sensor(
        context: dg.SensorEvaluationContext, kafka: KafkaResource, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        lags = {}
        for table, topic in lake.topics().items():
            try:
                lags[table] = sum(kafka.lag(topic, lake.group(table)).values())
            except Exception as exc:  # a broker outage: say so and look again next tick
                return dg.SkipReason(f"cannot read the lag of {topic}: {exc}")
        total = sum(lags.values())
        described = ", ".join(f"{t}={n:,}" for t, n in lags.items())
        if total < threshold:
            return dg.SkipReason(f"lag {total:,} < {threshold:,} ({described})")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    # Keyed by the lag itself: a tick that sees the same lag again (a run is still
                    # landing it) asks for nothing new; any new record changes the key.
                    run_key=f"lag-{described}",
                    tags={"sentinel/trigger": "lag", "sentinel/lag": str(total)},
                )
            ]
        )

    return bronze_lag_sensor
