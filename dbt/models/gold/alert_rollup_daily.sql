-- Per UTC day, rule and severity: how many alerts, on how many hosts, covering how many events.
with

alerts as (

    select
        -- the UTC calendar day, whatever the session's time zone
        cast(timezone('UTC', ts) as date) as day,
        rule_id,
        severity,
        host_id,
        event_count,
        ts
    from {{ ref('silver_alerts') }}

)

select
    day,
    rule_id,
    severity,
    count(*) as alerts,
    count(distinct host_id) as distinct_hosts,
    cast(sum(event_count) as bigint) as events,
    min(ts) as first_seen,
    max(ts) as last_seen
from alerts
group by day, rule_id, severity
