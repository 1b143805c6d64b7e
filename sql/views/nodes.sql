-- every tree node of every role in one shape: what the role saw (prompt) and wrote (text)
create or replace view nodes as
select dataset, shard, question_id, g_id as node_id, question_id as parent_id,
       'generator' as role, prompt, text, pred_answer, parse_ok, error, n_samples,
       finish_reason, n_tokens
from generations
union all by name
select dataset, shard, question_id, v_id as node_id, g_id as parent_id,
       'verifier' as role, prompt, text, pred_answer, parse_ok, error, n_samples,
       finish_reason, n_tokens
from critiques
union all by name
select dataset, shard, question_id, r_id as node_id, v_id as parent_id,
       'refiner' as role, prompt, text, pred_answer, parse_ok, error, n_samples,
       finish_reason, n_tokens
from refinements
