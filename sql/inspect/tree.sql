-- One question's tree ($question_id): every node with what it wrote, its extracted answer,
-- its reward (refiner leaves), its value and label under the current credit, in tree order.
select n.node_id, n.parent_id, n.role, n.text, n.pred_answer, n.parse_ok, n.error,
       l.reward, c.value, c.label, c.theta, c.n_children
from nodes as n
left join credit as c on c.node_id = n.node_id
left join leaf_rewards as l on l.r_id = n.node_id
where n.question_id = $question_id
order by n.node_id
