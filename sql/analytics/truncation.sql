-- how often each role's samples hit their token budget (finish_reason 'length'), per dataset
-- and split: in tree expansion (every node) and in evaluation (every chain's turns, from the
-- MA+MV, MALT+MV and ablation +MV rows, which hold each chain's G, V and R turns once; the
-- stage names the adapter set: eval base, eval MALT, eval MALT(G), ...). A truncated sample
-- is scored only on a complete explicit answer marker; a high rate means the budget is too
-- small for the model's answers.
create or replace view truncation as
with
cte_expansion as (
    select dataset, split_part(shard, '.', 1) as split, 'expansion' as stage, role,
           finish_reason, n_tokens
    from nodes
    where error is null
),
cte_eval_turns as (
    select dataset, split,
           'eval ' || case when system = 'MA+MV' then 'base'
                           else replace(system, '+MV', '') end as stage,
           unnest(trajectory) as t
    from eval_predictions
    where system like 'MA%+MV'
),
cte_samples as (
    select * from cte_expansion
    union all
    select dataset, split, stage, t.role as role, t.finish_reason as finish_reason,
           t.n_tokens as n_tokens
    from cte_eval_turns
    where t.text is not null
)
select dataset, split, stage, role,
       count(*) as samples,
       count(*) filter (where finish_reason = 'length') as truncated,
       avg((finish_reason = 'length')::int)::double as truncation_rate,
       avg(n_tokens)::double as mean_tokens
from cte_samples
group by dataset, split, stage, role
order by dataset, split, stage, list_position(['generator', 'verifier', 'refiner'], role)
