-- the evaluation rows of the truncation view for one dataset ($dataset): per adapter set and
-- role, how often a turn hit its token budget
select stage, role, samples, truncated, truncation_rate, mean_tokens
from truncation
where dataset = $dataset and stage like 'eval %'
order by stage, list_position(['generator', 'verifier', 'refiner'], role)
