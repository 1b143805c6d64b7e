-- MALT credit, step 2 of 2, for one partition ($dataset, $shard) at threshold $theta, over the
-- verifier values of sql/credit/verifier_values.sql (temp table credit_verifiers):
--   generator node g: value = avg(verifier value) over (partition by g_id)   (mean of means)
--   label = value > $theta (strict); null when a node has no valued child.
-- A failed child (null value) is left out of its parent's mean, and n_children counts the
-- children that have a value. A generation without critiques (a failed sample) is still a
-- node: null value, null label, n_children 0. One critique per generation (the smallest v_idx)
-- carries the generation's value on.
-- Rows come in no particular order (sorting tens of millions of string ids would dominate the
-- cost); ids are deterministic. dataset and shard are the bound parameters (every row read
-- matches them), so the windows need not carry them.
with
cte_verifier_windows as (
    select question_id, v_id, v_idx, g_id, value, n_children,
           avg(value) over w_g as g_value,
           count(value) over w_g as g_children,
           min(v_idx) over w_g as first_v_idx
    from credit_verifiers
    window w_g as (partition by g_id)
),
cte_generators as (
    select g.question_id, g.g_id as node_id, g.question_id as parent_id,
           vw.g_value as value, coalesce(vw.g_children, 0) as n_children
    from generations as g
    left join cte_verifier_windows as vw on vw.g_id = g.g_id and vw.v_idx = vw.first_v_idx
    where g.dataset = $dataset and g.shard = $shard
),
cte_nodes as (
    select question_id, node_id, parent_id, 'generator' as role, value, n_children
    from cte_generators
    union all
    select question_id, v_id as node_id, g_id as parent_id, 'verifier' as role, value,
           n_children
    from cte_verifier_windows
    union all
    select question_id, r_id as node_id, v_id as parent_id, 'refiner' as role,
           reward::double as value, 0::bigint as n_children
    from leaf_rewards
    where dataset = $dataset and shard = $shard
)
select $dataset as dataset, $shard as shard, question_id, node_id, parent_id, role, value,
       value > $theta as label,
       $theta::double as theta,
       n_children
from cte_nodes
