-- how the refiner changes the generator's answer along each G -> V -> R path (the paper's
-- flip figure): correct->correct, incorrect->correct, correct->incorrect, incorrect->incorrect
create or replace view flips as
with
cte_paths as (
    select l.dataset, g.reward as g_reward, l.reward as r_reward
    from leaf_rewards as l
    join generation_rewards as g on g.g_id = l.g_id
    where l.reward is not null and g.reward is not null
)
select dataset,
       case when g_reward = 1 then 'correct' else 'incorrect' end
       || '->' ||
       case when r_reward = 1 then 'correct' else 'incorrect' end as flip,
       count(*) as n_paths,
       count(*) / sum(count(*)) over (partition by dataset) as share
from cte_paths
group by dataset, flip
order by dataset, flip
