-- Network events (kind net), one row per event id, typed from the payload's net object.
with

source as (

    {{ event_payloads('net') }}

),

parsed as (

    select
        event_id,
        ts,
        host_id,
        payload ->> '$.net.action' as action,
        payload ->> '$.net.proto' as proto,
        payload ->> '$.net.src_ip' as src_ip,
        cast(payload ->> '$.net.src_port' as integer) as src_port,
        payload ->> '$.net.dst_ip' as dst_ip,
        cast(payload ->> '$.net.dst_port' as integer) as dst_port,
        cast(payload ->> '$.net.pid' as bigint) as pid,
        payload ->> '$.net.exe' as exe,
        cast(payload ->> '$.net.bytes_in' as bigint) as bytes_in,
        cast(payload ->> '$.net.bytes_out' as bigint) as bytes_out,
        cast(payload ->> '$.net.packets' as bigint) as packets
    from source

)

select * from parsed
