-- One question ($question_id) with its ground truth.
select question_id, dataset, shard, question, answer
from questions
where question_id = $question_id
