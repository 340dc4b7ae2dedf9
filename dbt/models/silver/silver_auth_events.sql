-- Authentication events (kind auth), one row per event id, typed from the payload's auth object.
with

source as (

    {{ event_payloads('auth') }}

),

parsed as (

    select
        event_id,
        ts,
        host_id,
        payload ->> '$.auth.action' as action,
        payload ->> '$.auth.user' as user_name,
        payload ->> '$.auth.src_ip' as src_ip,
        payload ->> '$.auth.method' as method
    from source

)

select * from parsed
