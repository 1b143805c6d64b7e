-- Every SFT example of one role ($role) in the training split ($split) of the datasets
-- $datasets (one, or several for a pooled adapter), in a
-- stable order: what the role's adapter trains on.
with cte_all as (
    select * from sft_generator
    union all by name select * from sft_verifier
    union all by name select * from sft_refiner
)
select dataset, shard, node_id, prompt, completion, theta
from cte_all
where role = $role and split_part(shard, '.', 1) = $split
  and list_contains($datasets, dataset)
order by dataset, shard, node_id
