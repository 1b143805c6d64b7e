-- node values per role in $bins equal buckets of [0, 1] (the credit asset's UI histogram);
-- reads the registered relation credit_rows
select role,
       least(floor(value * $bins), $bins - 1)::int as bucket,
       round(least(floor(value * $bins), $bins - 1) / $bins, 2) as lower_bound,
       count(*) as n_nodes
from credit_rows
where value is not null
group by all
order by role, bucket
