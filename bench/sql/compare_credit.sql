-- Do two credit outputs ($left, $right: Parquet files) hold the same nodes? Compares the nodes
-- whose id hashes to 0 modulo $every (1: all of them) on every column, values within 1e-9.
with
cte_left as (
    select * from read_parquet($left) where hash(node_id) % $every = 0
),
cte_right as (
    select * from read_parquet($right) where hash(node_id) % $every = 0
),
cte_pairs as (
    select l.node_id as left_id, r.node_id as right_id,
           l.dataset is not distinct from r.dataset
           and l.shard is not distinct from r.shard
           and l.question_id is not distinct from r.question_id
           and l.parent_id is not distinct from r.parent_id
           and l.label is not distinct from r.label
           and l.theta is not distinct from r.theta
           and l.n_children is not distinct from r.n_children
           and (l.value is null) = (r.value is null)
           and coalesce(abs(l.value - r.value) <= 1e-9, true) as same
    from cte_left as l
    full join cte_right as r on r.node_id = l.node_id and r.role = l.role
)
select count(*) as nodes_compared,
       count(*) filter (where left_id is null or right_id is null) as unmatched,
       count(*) filter (where left_id is not null and right_id is not null and not same)
           as different,
       any_value(coalesce(left_id, right_id)) filter (
           where left_id is null or right_id is null or not same) as example
from cte_pairs
