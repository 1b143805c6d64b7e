-- Baseline for bench/credit_bench.py: the credit statement as it was before the window form
-- (sql/credit/credit.sql), values propagated by group-by aggregates joined back to the tree.
-- Same parameters, same output rows and columns.
-- MALT credit assignment for one partition ($dataset, $shard) at threshold $theta.
--   refiner node r:   value = reward(r)                      (null for a failed sample)
--   verifier node v:  value = mean of its refinements' values
--   generator node g: value = mean of its critiques' values
--   label = value > $theta (strict); null when a node has no valued child.
-- A failed child (error recorded, null value) is left out of its parent's mean, and
-- n_children counts the children that have a value. Rows come in no particular order
-- (sorting tens of millions of string ids would dominate the cost); ids are deterministic.
with
cte_leaves as not materialized (
    select dataset, shard, question_id, g_id, v_id, r_id, reward::double as value
    from leaf_rewards
    where dataset = $dataset and shard = $shard
),
cte_verifier_values as (
    select v_id, avg(value) as value, count(value) as n_children
    from cte_leaves
    group by v_id
),
cte_verifiers as not materialized (
    select c.dataset, c.shard, c.question_id, c.v_id as node_id, c.g_id as parent_id,
           vv.value, coalesce(vv.n_children, 0) as n_children
    from critiques as c
    left join cte_verifier_values as vv on vv.v_id = c.v_id
    where c.dataset = $dataset and c.shard = $shard
),
cte_generator_values as (
    select parent_id as g_id, avg(value) as value, count(value) as n_children
    from cte_verifiers
    group by parent_id
),
cte_generators as (
    select g.dataset, g.shard, g.question_id, g.g_id as node_id, g.question_id as parent_id,
           gv.value, coalesce(gv.n_children, 0) as n_children
    from generations as g
    left join cte_generator_values as gv on gv.g_id = g.g_id
    where g.dataset = $dataset and g.shard = $shard
),
cte_nodes as (
    select *, 'generator' as role from cte_generators
    union all by name
    select *, 'verifier' as role from cte_verifiers
    union all by name
    select dataset, shard, question_id, r_id as node_id, v_id as parent_id, value,
           0::bigint as n_children, 'refiner' as role
    from cte_leaves
)
select dataset, shard, question_id, node_id, parent_id, role, value,
       value > $theta as label,
       $theta::double as theta,
       n_children
from cte_nodes

