-- $questions synthetic MALT trees (n = 3: 27 leaves each) for one partition; each question
-- gets a difficulty so trees hold a realistic mix of right and wrong leaves
with
cte_leaves as (
    select q, g, v, r,
           'bench:q' || lpad(q::varchar, 7, '0') as question_id
    from range($questions) as tq(q), range(3) as tg(g), range(3) as tv(v), range(3) as tr(r)
)
select 'bench' as dataset, 'train.0000' as shard, question_id,
       g as g_idx, question_id || '/g' || g as g_id,
       v as v_idx, question_id || '/g' || g || '/v' || v as v_id,
       r as r_idx, question_id || '/g' || g || '/v' || v || '/r' || r as r_id,
       (hash(q, g, v, r) % 100 < hash(q) % 100)::tinyint as reward
from cte_leaves
