-- What the verifier and refiner do to the generator's answer on held-out questions, for one
-- dataset ($dataset): per adapter set (base = untrained, MALT, ablations) and chain, the
-- generator turn's correctness against the refined turn's. From the +MV rows, which hold
-- every chain's G, V and R turns once. A turn without an answer counts as incorrect.
with
cte_turns as (
    select seed, question_id,
           case when system = 'MA+MV' then 'base' else replace(system, '+MV', '') end
               as adapter_set,
           unnest(trajectory) as t
    from eval_predictions
    where dataset = $dataset and system like 'MA%+MV'
),
cte_chains as (
    select adapter_set, seed, question_id, t.chain as chain,
           bool_or(coalesce(t.correct, false)) filter (where t.role = 'generator')
               as generator_correct,
           bool_or(coalesce(t.correct, false)) filter (where t.role = 'refiner')
               as refiner_correct
    from cte_turns
    group by all
)
select adapter_set,
       count(*) as chains,
       count(*) filter (where generator_correct and refiner_correct) as correct_kept,
       count(*) filter (where generator_correct and not refiner_correct)
           as correct_to_incorrect,
       count(*) filter (where not generator_correct and refiner_correct)
           as incorrect_to_correct,
       count(*) filter (where not generator_correct and not refiner_correct)
           as incorrect_kept,
       avg(generator_correct::int)::double as generator_accuracy,
       avg(refiner_correct::int)::double as refiner_accuracy
from cte_chains
group by adapter_set
order by adapter_set <> 'base', adapter_set <> 'MALT', adapter_set
