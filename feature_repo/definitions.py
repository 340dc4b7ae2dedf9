"""Feast definitions of Sentinel Lab: the `host` entity, its feature views and feature services.

Definitions only, no side effects: nothing here reads settings or touches a store. The batch
source is the Parquet export of `gold.host_features_5m`; its relative path resolves against the
Feast state folder (SENTINEL_FEAST_DIR), where the `feast_repository` asset writes it.

Every view has one row per host and 5-minute window, stamped with the window's end, and a TTL of
one window, so a point-in-time join never borrows a previous window's counts.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

WINDOW = timedelta(minutes=5)

host = Entity(
    name="host",
    join_keys=["host_id"],
    value_type=ValueType.STRING,
    description="a monitored host, by the sensors' host.id",
)

host_features_source = FileSource(
    name="host_features_5m",
    path="data/host_features_5m.parquet",
    timestamp_field="event_timestamp",
    description="gold.host_features_5m exported to Parquet after the lake gates pass",
)

# Workers push the counters of the window in progress here (online only).
host_activity_push = PushSource(
    name="host_activity_push",
    batch_source=host_features_source,
    description="live per-host window counters from streams/scoring",
)

host_activity = FeatureView(
    name="host_activity",
    entities=[host],
    ttl=WINDOW,
    schema=[
        Field(name="events", dtype=Int64),
        Field(name="process_spawns", dtype=Int64),
        Field(name="distinct_parents", dtype=Int64),
        Field(name="file_writes", dtype=Int64),
        Field(name="bytes_out", dtype=Int64),
        Field(name="auth_failures", dtype=Int64),
    ],
    source=host_activity_push,
    online=True,
    description="what the host did in the window; the streams push the window in progress",
)

host_dns = FeatureView(
    name="host_dns",
    entities=[host],
    ttl=WINDOW,
    schema=[
        Field(name="dns_queries", dtype=Int64),
        Field(name="dns_distinct_domains", dtype=Int64),
        Field(name="dns_nxdomain", dtype=Int64),
        Field(name="dns_txt_queries", dtype=Int64),
        Field(name="dns_entropy_avg", dtype=Float64),
        Field(name="dns_entropy_max", dtype=Float64),
    ],
    source=host_features_source,
    online=True,
    description="the host's DNS lookups in the window",
)

host_alerts = FeatureView(
    name="host_alerts",
    entities=[host],
    ttl=WINDOW,
    schema=[
        Field(name="alerts", dtype=Int64),
        Field(name="high_alerts", dtype=Int64),
    ],
    source=host_features_source,
    online=True,
    description="rule alerts raised on the host in the window (model alerts excluded)",
)

# One feature service per model version's feature set: a registered model names the service it
# was trained on, and scoring fetches exactly that service.
host_anomaly_v1 = FeatureService(
    name="host_anomaly_v1",
    features=[host_activity, host_dns, host_alerts],
    description="every host feature: activity, DNS and rule alerts",
)

host_anomaly_activity_v1 = FeatureService(
    name="host_anomaly_activity_v1",
    features=[host_activity[["events", "file_writes"]]],
    description="two activity counts only: a deliberately weak baseline for promotion tests",
)

OBJECTS = [
    host,
    host_features_source,
    host_activity_push,
    host_activity,
    host_dns,
    host_alerts,
    host_anomaly_v1,
    host_anomaly_activity_v1,
]
