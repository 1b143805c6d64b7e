-- rows of one partition ($dataset, $shard) generated or scored for a parent that has changed
-- since (its fingerprint differs from the one the row was made for) or that no longer
-- exists: such a subtree is stale, and credit over it would join old leaves to new parents.
-- Returns one row per stale row: the table, its id, and what is wrong.
with
cte_generations as (
    select 'generations' as table_name, g.g_id as node_id, 'questions' as parent_table,
           g.parent_fingerprint as expected, q.fingerprint as actual
    from generations as g
    left join questions as q
        on q.question_id = g.question_id and q.dataset = $dataset and q.shard = $shard
    where g.dataset = $dataset and g.shard = $shard
),
cte_critiques as (
    select 'critiques' as table_name, c.v_id as node_id, 'generations' as parent_table,
           c.parent_fingerprint as expected, g.fingerprint as actual
    from critiques as c
    left join generations as g
        on g.g_id = c.g_id and g.dataset = $dataset and g.shard = $shard
    where c.dataset = $dataset and c.shard = $shard
),
cte_refinements as (
    select 'refinements' as table_name, r.r_id as node_id, 'critiques' as parent_table,
           r.parent_fingerprint as expected, c.fingerprint as actual
    from refinements as r
    left join critiques as c
        on c.v_id = r.v_id and c.dataset = $dataset and c.shard = $shard
    where r.dataset = $dataset and r.shard = $shard
),
cte_leaf_rewards as (
    select 'leaf_rewards' as table_name, l.r_id as node_id, 'refinements' as parent_table,
           l.fingerprint as expected, r.fingerprint as actual
    from leaf_rewards as l
    left join refinements as r
        on r.r_id = l.r_id and r.dataset = $dataset and r.shard = $shard
    where l.dataset = $dataset and l.shard = $shard
),
cte_unscored as (
    select 'leaf_rewards' as table_name, r.r_id as node_id, 'refinements' as parent_table,
           'no reward row for this refinement' as problem
    from refinements as r
    anti join leaf_rewards as l
        on l.r_id = r.r_id and l.dataset = $dataset and l.shard = $shard
    where r.dataset = $dataset and r.shard = $shard
),
cte_links as (
    select * from cte_generations
    union all select * from cte_critiques
    union all select * from cte_refinements
    union all select * from cte_leaf_rewards
)
select table_name, node_id, parent_table,
       case when actual is null then 'parent row missing'
            else 'parent changed since this row was written' end as problem
from cte_links
where actual is distinct from expected
union all
select * from cte_unscored
order by table_name, node_id
