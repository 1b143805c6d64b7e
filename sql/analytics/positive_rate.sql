-- share of positive nodes per role at the theta each partition's credit was computed with
create or replace view positive_rate as
select dataset, role, theta,
       avg(label::int) as positive_rate,
       count(*) filter (where label) as n_positive,
       count(label) as n_labeled
from credit
group by all
order by dataset, role, theta
