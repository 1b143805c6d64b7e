-- accuracy of each role turn per dataset and split: is the generator's answer right (G),
-- is the refiner's final answer right (R)? Failed samples are left out.
create or replace view accuracy_by_turn as
with
cte_g as (
    select dataset, split_part(shard, '.', 1) as split,
           avg(reward) as accuracy, count(reward) as n
    from generation_rewards
    group by all
),
cte_r as (
    select dataset, split_part(shard, '.', 1) as split,
           avg(reward) as accuracy, count(reward) as n
    from leaf_rewards
    group by all
)
select dataset, split, 'generator' as turn, accuracy, n from cte_g
union all
select dataset, split, 'refiner' as turn, accuracy, n from cte_r
order by dataset, split, turn
