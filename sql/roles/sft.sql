-- SFT examples of one role ($role) for one partition: every positive node (label true), as
-- TRL's conversational prompt-completion: the exact messages the role saw, and its answer.
select n.dataset, n.shard, n.question_id, n.node_id, n.role, n.prompt,
       [{'role': 'assistant', 'content': n.text}] as completion,
       c.value, c.theta
from credit as c
join nodes as n on n.node_id = c.node_id
where c.dataset = $dataset and c.shard = $shard and c.role = $role and c.label
  and n.dataset = $dataset and n.shard = $shard  -- prunes the other partitions' files
  and n.text is not null
order by n.node_id
