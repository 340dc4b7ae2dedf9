-- Per registered domain: how much, by how many hosts, how random and how often unresolved.
with

queries as (

    select * from {{ ref('silver_dns_events') }}
    where registered_domain is not null

)

select
    registered_domain,
    count(*) as queries,
    count(distinct host_id) as distinct_hosts,
    count(distinct query_name) as distinct_queries,
    cast(count(*) filter (where rcode = 'NXDOMAIN') as double) / count(*) as nxdomain_ratio,
    count(*) filter (where qtype = 'TXT') as txt_queries,
    avg(query_entropy) as entropy_avg,
    max(query_entropy) as entropy_max,
    min(ts) as first_seen,
    max(ts) as last_seen
from queries
group by registered_domain
