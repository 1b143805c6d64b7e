-- The held-out questions of one dataset ($dataset) and split ($split), in a stable order, with
-- the stratum (subject/level) that evaluation subsets are stratified by.
select dataset, question_id, family, question, choices, answer, stratum
from questions
where dataset = $dataset and split_part(shard, '.', 1) = $split
order by question_id
