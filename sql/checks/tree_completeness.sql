-- nodes of one partition ($dataset, $shard) that lack children: a generator or verifier node
-- without a recorded failure must have as many children as were requested (n_samples of its
-- children's rows), and at least one. Returns the offending nodes.
with
cte_children as (
    select parent_id, count(*) as n_children, max(n_samples) as n_requested
    from nodes
    where dataset = $dataset and shard = $shard
    group by parent_id
)
select n.node_id, n.role, coalesce(c.n_children, 0) as n_children, c.n_requested
from nodes as n
left join cte_children as c on c.parent_id = n.node_id
where n.dataset = $dataset and n.shard = $shard
  and n.role in ('generator', 'verifier')
  and n.error is null
  and (c.n_children is null or c.n_children <> c.n_requested)
order by n.node_id
