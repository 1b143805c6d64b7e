-- credit rows of one partition that break the contract: duplicate node ids, values outside
-- [0, 1], or labels that disagree with value > theta. Returns one row per problem.
with
cte_credit as (
    select *, count(*) over (partition by node_id) as n_same_id
    from credit
    where dataset = $dataset and shard = $shard
)
select node_id,
       case
           when n_same_id > 1 then 'duplicate node_id'
           when value < 0 or value > 1 then 'value outside [0, 1]'
           else 'label disagrees with value > theta'
       end as problem
from cte_credit
where n_same_id > 1
   or value < 0 or value > 1
   or label is distinct from (value > theta)
order by node_id
