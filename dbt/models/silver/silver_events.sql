-- One row per event id: the copy Kafka saw first, with the fields every kind shares.
with

source as (

    select * from {{ source('bronze', 'events') }}

),

deduplicated as (

    select
        event_id,
        event_ts,
        host_id,
        kind,
        payload,
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        landed_at
    from source
    {{ keep_earliest('event_id') }}

),

parsed as (

    select
        event_id,
        event_ts as ts,
        host_id,
        payload ->> '$.host.name' as host_name,
        payload ->> '$.host.os' as host_os,
        kind,
        payload ->> '$.sensor.name' as sensor_name,
        payload ->> '$.sensor.version' as sensor_version,
        payload ->> '$.labels.scenario' as label_scenario,
        cast(payload ->> '$.labels.attack' as boolean) as label_attack,
        payload ->> '$.labels.technique' as label_technique,
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        landed_at
    from deduplicated

)

select * from parsed
