-- Every DPO pair of one role ($role) in the training split ($split) of the datasets
-- $datasets (one, or several for a pooled adapter), in a
-- stable order: what the role's DPO stage trains on.
with cte_all as (
    select * from dpo_generator
    union all by name select * from dpo_verifier
    union all by name select * from dpo_refiner
)
select dataset, shard, parent_id, pos_id, neg_id, prompt, chosen, rejected, theta
from cte_all
where role = $role and split_part(shard, '.', 1) = $split
  and list_contains($datasets, dataset)
order by dataset, shard, parent_id, pos_id, neg_id
