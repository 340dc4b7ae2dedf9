-- One row per dead letter (DLQ partition and offset): why a record failed, where it came from.
with

source as (

    select * from {{ source('bronze', 'dlq') }}

),

renamed as (

    select
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        error,
        stage,
        source_topic,
        source_partition,
        source_offset,
        record_key,
        octet_length(payload) as payload_size,
        landed_at
    from source

)

select * from renamed
-- a record is landed once per (partition, offset); should a file repeat one, keep the first
qualify row_number() over (
    partition by kafka_partition, kafka_offset order by landed_at
) = 1
