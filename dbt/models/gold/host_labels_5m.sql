-- Ground truth for training and evaluation, kept apart from the features: per host and 5-minute
-- window with any event, whether it held events of a scenario's attack (the generator's labels;
-- sensors never label, so recorded traffic has none and counts as benign).
select
    host_id,
    time_bucket(interval 5 minutes, ts) as window_start,
    time_bucket(interval 5 minutes, ts) + interval 5 minutes as event_timestamp,
    count(*) filter (where label_attack) as attack_events,
    coalesce(bool_or(label_attack), false) as is_attack,
    coalesce(
        string_agg(distinct label_scenario, ',' order by label_scenario)
            filter (where label_attack),
        ''
    ) as attacks
from {{ ref('silver_events') }}
group by all
