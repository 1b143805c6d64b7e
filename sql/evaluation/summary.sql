-- The comparison table for one dataset ($dataset): accuracy mean and std over seeds per system,
-- in the paper's order (single agent, multi-agent, trained MALT; each without and with MV@3),
-- then the ablations when they ran.
with cte_per_seed as (
    select dataset, split, system, seed, avg(correct::int)::double as accuracy, count(*) as n
    from eval_predictions
    where dataset = $dataset
    group by all
)
select dataset, split, system,
       avg(accuracy) as accuracy_mean,
       coalesce(stddev_samp(accuracy), 0.0) as accuracy_std,
       count(*) as seeds,
       sum(n) as predictions
from cte_per_seed
group by dataset, split, system
order by list_position(['SA', 'SA+MV', 'MA', 'MA+MV', 'MALT', 'MALT+MV', 'MALT(G)', 'MALT(G)+MV',
                        'MALT(V+R)', 'MALT(V+R)+MV', 'MALT(V+R SFT)', 'MALT(V+R SFT)+MV'],
                       system),
         system
