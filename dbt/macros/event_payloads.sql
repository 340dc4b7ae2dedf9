{#-
    Id, ts, host and payload of the events of one kind, one row per event id: the copy that
    silver_events kept, so every per-kind model agrees with it on which copy counts.
-#}
{% macro event_payloads(kind) -%}
    select
        events.event_id,
        events.ts,
        events.host_id,
        bronze.payload
    from {{ ref('silver_events') }} as events
    inner join {{ source('bronze', 'events') }} as bronze
        using (event_id, kafka_partition, kafka_offset)
    where events.kind = '{{ kind }}'
{%- endmacro %}
