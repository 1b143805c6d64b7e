-- The held-out questions of one dataset ($dataset) and split ($split), in a stable order.
select dataset, question_id, family, question, choices, answer
from questions
where dataset = $dataset and split_part(shard, '.', 1) = $split
order by question_id
