-- One row per alert id (replays repeat ids by design): the copy Kafka saw first, typed.
with

source as (

    select * from {{ source('bronze', 'alerts') }}

),

deduplicated as (

    select
        alert_id,
        alert_ts,
        rule_id,
        severity,
        host_id,
        payload,
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        landed_at
    from source
    {{ keep_earliest('alert_id') }}

),

parsed as (

    select
        alert_id,
        alert_ts as ts,
        rule_id,
        payload ->> '$.rule.version' as rule_version,
        payload ->> '$.rule.hash' as rule_hash,
        severity,
        payload ->> '$.title' as title,
        host_id,
        -- `count` is how many events suppression folded into the alert; absent means one
        coalesce(cast(payload ->> '$.count' as bigint), 1) as event_count,
        cast(json_array_length(payload, '$.event_ids') as bigint) as n_event_ids,
        coalesce(cast(payload -> '$.mitre' as varchar[]), []) as mitre,
        payload ->> '$.dedup_key' as dedup_key,
        cast(payload ->> '$.window_start' as timestamptz) as window_start,
        payload ->> '$.provenance.pack' as pack,
        payload ->> '$.provenance.pack_version' as pack_version,
        payload ->> '$.provenance.engine_version' as engine_version,
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        landed_at
    from deduplicated

)

select * from parsed
