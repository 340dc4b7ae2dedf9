{#- Keep one row per key: the copy Kafka saw first. Replays and producer retries repeat records. -#}
{% macro keep_earliest(key) -%}
    qualify row_number() over (
        partition by {{ key }}
        order by kafka_timestamp, kafka_partition, kafka_offset
    ) = 1
{%- endmacro %}
