-- MALT credit, step 1 of 2, for one partition ($dataset, $shard): the value of every verifier
-- node as a window aggregation over its refinements (leaves), into the temp table
-- credit_verifiers that sql/credit/credit.sql reads.
--   refiner node r:   value = reward(r)                        (null for a failed sample)
--   verifier node v:  value = avg(leaf value) over (partition by v_id)
-- A failed leaf (null value) is left out of the mean (avg and count skip nulls); n_children
-- counts the valued leaves. A critique without leaves (a failed sample) is still a node: null
-- value, n_children 0. One leaf per verifier (the smallest r_idx; an integer, so picking it
-- costs an integer min and compare, not a string one) carries its value on.
-- Why a table: DuckDB runs a window that reads a table scan as a hash aggregate joined back
-- (its window self-join rewrite), several times cheaper per row than its window operator
-- over a join; writing the verifier level down lets the generator window read a scan too.
create or replace temp table credit_verifiers as
with
cte_leaves as not materialized (
    select v_id, r_idx, reward::double as value
    from leaf_rewards
    where dataset = $dataset and shard = $shard
),
cte_leaf_windows as (
    select v_id, r_idx,
           avg(value) over w_v as value,
           count(value) over w_v as n_children,
           min(r_idx) over w_v as first_r_idx
    from cte_leaves
    window w_v as (partition by v_id)
)
select c.question_id, c.v_id, c.v_idx, c.g_id, lw.value,
       coalesce(lw.n_children, 0) as n_children
from critiques as c
left join cte_leaf_windows as lw on lw.v_id = c.v_id and lw.r_idx = lw.first_r_idx
where c.dataset = $dataset and c.shard = $shard
