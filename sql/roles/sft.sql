-- SFT examples of one role ($role) for one partition: every positive node (label true), as
-- TRL's conversational prompt-completion: the exact messages the role saw, and its answer.
-- A positive whose exact text a NEGATIVE sibling (same parent) also wrote is left out: the
-- same answer to the same prompt labelled both ways is noise, not a demonstration
-- (sql/roles/dropped.sql counts these).
with
cte_labeled as (
    select n.dataset, n.shard, n.question_id, n.node_id, n.parent_id, n.role, n.prompt,
           n.text, c.value, c.label, c.theta
    from credit as c
    join nodes as n on n.node_id = c.node_id
    where c.dataset = $dataset and c.shard = $shard and c.role = $role
      and n.dataset = $dataset and n.shard = $shard  -- prunes the other partitions' files
      and n.text is not null
),
cte_negative_texts as (
    select parent_id, text
    from cte_labeled
    where not label
)
select pos.dataset, pos.shard, pos.question_id, pos.node_id, pos.role, pos.prompt,
       [{'role': 'assistant', 'content': pos.text}] as completion,
       pos.value, pos.theta
from cte_labeled as pos
anti join cte_negative_texts as neg on neg.parent_id = pos.parent_id and neg.text = pos.text
where pos.label
order by pos.node_id
