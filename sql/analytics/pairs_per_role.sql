-- DPO preference pairs and SFT examples available per role and dataset
create or replace view pairs_per_role as
with
cte_pairs as (
    select dataset, role, count(*) as n from dpo_generator group by all
    union all
    select dataset, role, count(*) as n from dpo_verifier group by all
    union all
    select dataset, role, count(*) as n from dpo_refiner group by all
),
cte_sft as (
    select dataset, role, count(*) as n from sft_generator group by all
    union all
    select dataset, role, count(*) as n from sft_verifier group by all
    union all
    select dataset, role, count(*) as n from sft_refiner group by all
)
select coalesce(p.dataset, s.dataset) as dataset, coalesce(p.role, s.role) as role,
       coalesce(s.n, 0) as sft_examples, coalesce(p.n, 0) as dpo_pairs
from cte_pairs as p
full join cte_sft as s on s.dataset = p.dataset and s.role = p.role
order by dataset, role
