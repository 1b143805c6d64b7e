-- What sql/roles/sft.sql and sql/roles/dpo.sql leave out of one partition ($dataset, $shard),
-- per role: SFT positives whose exact text a negative sibling also wrote, and DPO pairs whose
-- chosen and rejected texts are equal. Both come from the siblings that share a text: a
-- (parent, text) with p positives and q negatives drops p SFT examples (when q > 0) and p * q
-- pairs. One row per role, zeros included.
with
cte_labeled as (
    select c.role, n.parent_id, n.text, c.label
    from credit as c
    join nodes as n on n.node_id = c.node_id
    where c.dataset = $dataset and c.shard = $shard
      and n.dataset = $dataset and n.shard = $shard  -- prunes the other partitions' files
      and c.label is not null and n.text is not null
),
cte_shared_texts as (
    select role, parent_id, text,
           count(*) filter (where label) as n_pos,
           count(*) filter (where not label) as n_neg
    from cte_labeled
    group by role, parent_id, text
    having count(*) filter (where label) > 0 and count(*) filter (where not label) > 0
),
cte_counts as (
    select role, sum(n_pos) as sft_dropped, sum(n_pos * n_neg) as dpo_dropped
    from cte_shared_texts
    group by role
)
select r.role,
       coalesce(cc.sft_dropped, 0)::bigint as sft_dropped_equal_text,
       coalesce(cc.dpo_dropped, 0)::bigint as dpo_dropped_equal_text
from (values ('generator'), ('verifier'), ('refiner')) as r(role)
left join cte_counts as cc on cc.role = r.role
order by r.role
