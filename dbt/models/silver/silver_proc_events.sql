-- Process events (kind proc), one row per event id, typed from the payload's proc object.
with

source as (

    {{ event_payloads('proc') }}

),

parsed as (

    select
        event_id,
        ts,
        host_id,
        payload ->> '$.proc.action' as action,
        cast(payload ->> '$.proc.pid' as bigint) as pid,
        cast(payload ->> '$.proc.ppid' as bigint) as ppid,
        payload ->> '$.proc.exe' as exe,
        payload ->> '$.proc.cmdline' as cmdline,
        payload ->> '$.proc.user' as user_name,
        cast(payload ->> '$.proc.uid' as bigint) as uid,
        payload ->> '$.proc.parent_exe' as parent_exe,
        payload ->> '$.proc.cwd' as cwd
    from source

)

select * from parsed
