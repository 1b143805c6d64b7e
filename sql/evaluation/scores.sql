-- Accuracy of every system per seed for one dataset ($dataset), from the stored predictions.
select dataset, split, system, seed,
       avg(correct::int)::double as accuracy,
       count(*) as n
from eval_predictions
where dataset = $dataset
group by all
order by system, seed
