-- DPO pairs of one role ($role) in one partition that are not one positive and one negative
-- sibling under the same parent, checked against credit. Returns the offending pairs.
with
cte_pairs as (
    select parent_id, pos_id, neg_id, role from dpo_generator
    where dataset = $dataset and shard = $shard
    union all
    select parent_id, pos_id, neg_id, role from dpo_verifier
    where dataset = $dataset and shard = $shard
    union all
    select parent_id, pos_id, neg_id, role from dpo_refiner
    where dataset = $dataset and shard = $shard
)
select p.parent_id, p.pos_id, p.neg_id
from cte_pairs as p
left join credit as pos on pos.node_id = p.pos_id
left join credit as neg on neg.node_id = p.neg_id
where p.role = $role
  and (pos.label is distinct from true
       or neg.label is distinct from false
       or pos.parent_id is distinct from p.parent_id
       or neg.parent_id is distinct from p.parent_id)
