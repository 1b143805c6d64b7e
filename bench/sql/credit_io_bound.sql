-- I/O bound for bench/credit_bench.py: read what the credit statement reads (generations,
-- critiques, leaf rows of one partition) and write as many node rows, with the same columns, as
-- it does, with no aggregation: no credit statement can write its Parquet faster than this.
with
cte_nodes as (
    select question_id, g_id as node_id, question_id as parent_id, 'generator' as role,
           null::double as value
    from generations
    where dataset = $dataset and shard = $shard
    union all
    select question_id, v_id as node_id, g_id as parent_id, 'verifier' as role,
           null::double as value
    from critiques
    where dataset = $dataset and shard = $shard
    union all
    select question_id, r_id as node_id, v_id as parent_id, 'refiner' as role,
           reward::double as value
    from leaf_rewards
    where dataset = $dataset and shard = $shard
)
select $dataset as dataset, $shard as shard, question_id, node_id, parent_id, role, value,
       value > $theta as label,
       $theta::double as theta,
       0::bigint as n_children
from cte_nodes
