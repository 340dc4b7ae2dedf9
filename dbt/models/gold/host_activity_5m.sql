-- Per host and 5-minute window (UTC) with any event: what the host did, as detection features.
with

events as (

    select
        event_id,
        host_id,
        time_bucket(interval 5 minutes, ts) as window_start
    from {{ ref('silver_events') }}

),

proc as (select event_id, action, parent_exe from {{ ref('silver_proc_events') }}),

file as (select event_id, action from {{ ref('silver_file_events') }}),

net as (select event_id, bytes_out from {{ ref('silver_net_events') }}),

dns as (select event_id, query_entropy from {{ ref('silver_dns_events') }}),

auth as (select event_id, action from {{ ref('silver_auth_events') }}),

-- each per-kind model has at most one row per event id, so these joins never fan out
joined as (

    select
        events.host_id,
        events.window_start,
        events.event_id,
        proc.action as proc_action,
        proc.parent_exe,
        file.action as file_action,
        net.event_id is not null as is_net,
        net.bytes_out,
        dns.event_id is not null as is_dns,
        dns.query_entropy,
        auth.action as auth_action
    from events
    left join proc using (event_id)
    left join file using (event_id)
    left join net using (event_id)
    left join dns using (event_id)
    left join auth using (event_id)

)

select
    host_id,
    window_start,
    count(*) as events,
    count(*) filter (where proc_action = 'exec') as process_spawns,
    count(distinct parent_exe) filter (where proc_action = 'exec') as distinct_parents,
    count(*) filter (where file_action in ('create', 'modify')) as file_writes,
    cast(coalesce(sum(bytes_out), 0) as bigint) as bytes_out,
    count(*) filter (where is_dns) as dns_queries,
    avg(query_entropy) as dns_entropy_avg,
    max(query_entropy) as dns_entropy_max,
    count(*) filter (where auth_action = 'failure') as auth_failures
from joined
group by host_id, window_start
