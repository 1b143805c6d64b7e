-- DPO pairs of one role ($role) for one partition: every positive with every negative among
-- the children of one parent (siblings share the prompt), as TRL's conversational
-- prompt/chosen/rejected. Windows count each parent's positives and negatives, so parents
-- without both are dropped before the self-join. A pair whose chosen and rejected texts are
-- equal teaches nothing (and is noise) and is left out (sql/roles/dropped.sql counts these).
with
cte_labeled as (
    select n.dataset, n.shard, n.question_id, n.node_id, n.parent_id, n.prompt, n.text,
           c.value, c.label, c.theta,
           count(*) filter (where c.label) over (partition by n.parent_id) as n_pos,
           count(*) filter (where not c.label) over (partition by n.parent_id) as n_neg
    from credit as c
    join nodes as n on n.node_id = c.node_id
    where c.dataset = $dataset and c.shard = $shard and c.role = $role
      and n.dataset = $dataset and n.shard = $shard  -- prunes the other partitions' files
      and c.label is not null and n.text is not null
),
cte_siblings as (
    select * from cte_labeled where n_pos > 0 and n_neg > 0
)
select pos.dataset, pos.shard, pos.question_id, pos.parent_id,
       pos.node_id as pos_id, neg.node_id as neg_id, $role as role,
       pos.prompt,
       [{'role': 'assistant', 'content': pos.text}] as chosen,
       [{'role': 'assistant', 'content': neg.text}] as rejected,
       pos.value as chosen_value, neg.value as rejected_value, pos.theta
from cte_siblings as pos
join cte_siblings as neg on neg.parent_id = pos.parent_id and not neg.label
where pos.label
  and pos.text <> neg.text
order by pos.node_id, neg.node_id
