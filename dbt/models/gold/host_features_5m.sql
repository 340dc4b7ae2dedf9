-- The feature rows of the host-anomaly models: one per host and 5-minute window with any event,
-- activity counts plus the window's DNS and rule-alert counts, every column filled (no NULLs).
-- `event_timestamp` is the window's end: the moment its features are known, which is what
-- Feast's point-in-time joins and the online store compare against.
with

activity as (select * from {{ ref('host_activity_5m') }}),

dns as (

    select
        host_id,
        time_bucket(interval 5 minutes, ts) as window_start,
        count(distinct registered_domain) as dns_distinct_domains,
        count(*) filter (where rcode = 'NXDOMAIN') as dns_nxdomain,
        count(*) filter (where qtype = 'TXT') as dns_txt_queries
    from {{ ref('silver_dns_events') }}
    group by all

),

-- rule alerts only: model alerts are this model's output, not its input
alerts as (

    select
        host_id,
        time_bucket(interval 5 minutes, ts) as window_start,
        count(*) as alerts,
        count(*) filter (where severity in ('high', 'critical')) as high_alerts
    from {{ ref('silver_alerts') }}
    where not starts_with(rule_id, 'model:')
    group by all

)

select
    activity.host_id,
    activity.window_start,
    activity.window_start + interval 5 minutes as event_timestamp,
    activity.events,
    activity.process_spawns,
    activity.distinct_parents,
    activity.file_writes,
    activity.bytes_out,
    activity.auth_failures,
    activity.dns_queries,
    coalesce(dns.dns_distinct_domains, 0) as dns_distinct_domains,
    coalesce(dns.dns_nxdomain, 0) as dns_nxdomain,
    coalesce(dns.dns_txt_queries, 0) as dns_txt_queries,
    coalesce(activity.dns_entropy_avg, 0.0) as dns_entropy_avg,
    coalesce(activity.dns_entropy_max, 0.0) as dns_entropy_max,
    coalesce(alerts.alerts, 0) as alerts,
    coalesce(alerts.high_alerts, 0) as high_alerts
from activity
left join dns using (host_id, window_start)
left join alerts using (host_id, window_start)
