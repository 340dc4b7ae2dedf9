-- File events (kind file), one row per event id, typed from the payload's file object.
with

source as (

    {{ event_payloads('file') }}

),

parsed as (

    select
        event_id,
        ts,
        host_id,
        payload ->> '$.file.action' as action,
        payload ->> '$.file.path' as path,
        payload ->> '$.file.new_path' as new_path,
        cast(payload ->> '$.file.pid' as bigint) as pid,
        payload ->> '$.file.exe' as exe,
        cast(payload ->> '$.file.size' as bigint) as size,
        payload ->> '$.file.mode' as mode,
        payload ->> '$.file.sha256' as sha256
    from source

)

select * from parsed
