-- DNS events (kind dns), one row per event id, typed, with the name's entropy and registered domain.
with

source as (

    {{ event_payloads('dns') }}

),

parsed as (

    select
        event_id,
        ts,
        host_id,
        payload ->> '$.dns.query' as query,
        payload ->> '$.dns.qtype' as qtype,
        payload ->> '$.dns.rcode' as rcode,
        cast(payload -> '$.dns.answers' as varchar[]) as answers,
        cast(payload ->> '$.dns.pid' as bigint) as pid,
        payload ->> '$.dns.exe' as exe,
        payload ->> '$.dns.server' as server
    from source

),

named as (

    select
        *,
        {{ dns_name('query') }} as query_name
    from parsed

)

select
    *,
    -- long random-looking labels (tunnels, DGAs) score high
    {{ shannon_entropy('query_name') }} as query_entropy,
    {{ registered_domain('query_name') }} as registered_domain
from named
