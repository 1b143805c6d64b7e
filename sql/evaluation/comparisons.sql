-- The stored paired comparisons of one dataset ($dataset), in the order they were computed
-- (the paper's pairs first, then the ablations).
select system, baseline, difference, ci_low, ci_high, level, questions, cells, verdict
from eval_comparisons
where dataset = $dataset
