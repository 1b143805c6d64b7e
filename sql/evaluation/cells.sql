-- Every (seed, question) cell of one dataset's ($dataset) stored predictions, per system: the
-- paired units the bootstrap intervals of malt_lake/stats.py resample.
select dataset, seed, question_id, system, correct
from eval_predictions
where dataset = $dataset
order by seed, question_id, system
