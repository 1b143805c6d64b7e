"""Arrow schemas of the lake's tables: the contracts of DESIGN.md section 3, in code.

Writers cast to these before writing, so every partition of a table has one schema and a
missing table still has a typed (empty) view.
"""

from __future__ import annotations

import pyarrow as pa

from malt_lake.names import ROLES

CHOICE = pa.struct([("label", pa.string()), ("text", pa.string())])

QUESTIONS = pa.schema(
    [
        ("dataset", pa.string()),
        ("shard", pa.string()),
        ("question_id", pa.string()),
        ("split", pa.string()),
        ("row_index", pa.int64()),
        ("question", pa.string()),
        ("choices", pa.list_(CHOICE)),
        ("answer", pa.string()),
        ("solution", pa.string()),
        ("family", pa.string()),
        ("source", pa.string()),
        ("stratum", pa.string()),      # e.g. MATH "Algebra/level 3"; null where none
        ("fingerprint", pa.string()),  # hash of question, choices, answer (lineage)
    ]
)

SHARDS = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("partition_key", pa.string()),
        ("n_questions", pa.int64()),
        ("first_row", pa.int64()),
        ("source", pa.string()),
        ("source_sha256", pa.string()),
        ("n_skipped_rows", pa.int64()),
    ]
)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

# What every generated row records: what made it and how (DESIGN.md section 3).
GENERATED_FIELDS = [
    ("prompt", MESSAGES),
    ("text", pa.string()),            # null when the sample failed (see `error`)
    ("pred_answer", pa.string()),     # the final answer extracted from `text`, if any
    ("parse_ok", pa.bool_()),
    ("error", pa.string()),           # a recorded failure; such a node gets no children
    ("finish_reason", pa.string()),
    ("model", pa.string()),
    ("adapter", pa.string()),         # adapter path, null for the base model
    ("template_hash", pa.string()),
    ("temperature", pa.float64()),
    ("top_p", pa.float64()),
    ("max_tokens", pa.int64()),
    ("seed", pa.int64()),             # the run's seed
    ("request_seed", pa.int64()),     # this request's own seed, derived from seed + path
    ("n_samples", pa.int64()),        # n requested for this prompt (the branching factor)
    ("n_prompt_tokens", pa.int64()),
    ("n_tokens", pa.int64()),
    # lineage: the parent's fingerprint when this row was generated, and this row's own
    # (a hash of the parent's and its text): a child whose parent_fingerprint no longer
    # equals its parent's fingerprint belongs to a parent that was regenerated since
    ("parent_fingerprint", pa.string()),
    ("fingerprint", pa.string()),
]
_PART = [("dataset", pa.string()), ("shard", pa.string()), ("question_id", pa.string())]

GENERATIONS = pa.schema([*_PART, ("g_idx", pa.int64()), ("g_id", pa.string()),
                         *GENERATED_FIELDS])
CRITIQUES = pa.schema([*_PART, ("g_id", pa.string()), ("v_idx", pa.int64()),
                       ("v_id", pa.string()), *GENERATED_FIELDS])
REFINEMENTS = pa.schema([*_PART, ("g_id", pa.string()), ("v_id", pa.string()),
                         ("r_idx", pa.int64()), ("r_id", pa.string()), *GENERATED_FIELDS])

_REWARD_FIELDS = [
    ("pred_answer", pa.string()),
    ("gold_answer", pa.string()),
    ("reward", pa.int8()),      # 1 right, 0 wrong or unparsable, null for a failed sample
    ("parse_ok", pa.bool_()),
    ("checker", pa.string()),
    ("fingerprint", pa.string()),  # the scored row's fingerprint (lineage)
]
LEAF_REWARDS = pa.schema([*_PART, ("g_id", pa.string()), ("v_id", pa.string()),
                          ("r_idx", pa.int64()), ("r_id", pa.string()), *_REWARD_FIELDS])
GENERATION_REWARDS = pa.schema([*_PART, ("g_id", pa.string()), *_REWARD_FIELDS])

CREDIT = pa.schema([
    *_PART,
    ("node_id", pa.string()),
    ("parent_id", pa.string()),
    ("role", pa.string()),        # generator | verifier | refiner
    ("value", pa.float64()),      # refiner: its reward; others: mean of children's values
    ("label", pa.bool_()),        # value > theta; null when the node has no value
    ("theta", pa.float64()),
    ("n_children", pa.int64()),   # children with a value (fewer than n = recorded failures)
])

SFT = pa.schema([
    *_PART,
    ("node_id", pa.string()),
    ("role", pa.string()),
    ("prompt", MESSAGES),
    ("completion", MESSAGES),
    ("value", pa.float64()),
    ("theta", pa.float64()),
])

DPO = pa.schema([
    *_PART,
    ("parent_id", pa.string()),
    ("pos_id", pa.string()),
    ("neg_id", pa.string()),
    ("role", pa.string()),
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("chosen_value", pa.float64()),
    ("rejected_value", pa.float64()),
    ("theta", pa.float64()),
])

TURN = pa.struct([("chain", pa.int64()), ("role", pa.string()), ("text", pa.string()),
                  ("pred_answer", pa.string()), ("adapter", pa.string()),
                  ("finish_reason", pa.string()), ("n_prompt_tokens", pa.int64()),
                  ("n_tokens", pa.int64()), ("request_seed", pa.int64()),
                  ("correct", pa.bool_())])  # the turn's own answer (G, R); null for V

EVAL_PREDICTIONS = pa.schema([
    ("eval_id", pa.string()),       # hash of model, adapters, settings, dataset, split
    ("dataset", pa.string()),
    ("split", pa.string()),
    ("seed", pa.int64()),
    ("system", pa.string()),        # SA | SA+MV | MA | MA+MV | MALT | MALT+MV | <ablation>[+MV]
    ("question_id", pa.string()),
    ("answer", pa.string()),        # ground truth
    ("pred_answer", pa.string()),   # the system's answer (after the vote for +MV)
    ("correct", pa.bool_()),
    ("votes", pa.list_(pa.string())),   # each chain's answer that went into it
    ("trajectory", pa.list_(TURN)),     # every turn that led to it, chain by chain
    ("model", pa.string()),
])

EVAL_SCORES = pa.schema([
    ("dataset", pa.string()),
    ("split", pa.string()),
    ("system", pa.string()),
    ("seed", pa.int64()),
    ("accuracy", pa.float64()),
    ("n", pa.int64()),
])

EVAL_COMPARISONS = pa.schema([
    ("dataset", pa.string()),
    ("system", pa.string()),        # e.g. MALT+MV
    ("baseline", pa.string()),      # e.g. MA+MV
    ("difference", pa.float64()),   # mean paired accuracy difference, system - baseline
    ("ci_low", pa.float64()),       # bootstrap interval over questions and seeds
    ("ci_high", pa.float64()),
    ("level", pa.float64()),        # 0.95
    ("questions", pa.int64()),
    ("cells", pa.int64()),          # (seed, question) pairs compared
    ("resamples", pa.int64()),
    ("verdict", pa.string()),       # better | worse | within noise
])

SFT_TABLES = {f"sft_{role}": role for role in ROLES}
DPO_TABLES = {f"dpo_{role}": role for role in ROLES}

# Tables partitioned by (dataset, shard) and tables written whole.
PARTITIONED: dict[str, pa.Schema] = {
    "questions": QUESTIONS,
    "generations": GENERATIONS,
    "critiques": CRITIQUES,
    "refinements": REFINEMENTS,
    "leaf_rewards": LEAF_REWARDS,
    "generation_rewards": GENERATION_REWARDS,
    "credit": CREDIT,
    **{name: SFT for name in SFT_TABLES},
    **{name: DPO for name in DPO_TABLES},
}
UNPARTITIONED: dict[str, pa.Schema] = {"shards": SHARDS}
# Tables with one file per dataset (evaluation runs over a dataset's held-out split).
BY_DATASET: dict[str, pa.Schema] = {"eval_predictions": EVAL_PREDICTIONS,
                                    "eval_scores": EVAL_SCORES,
                                    "eval_comparisons": EVAL_COMPARISONS}


# Every lake table, in the order views and commands list them.
ALL_TABLES: dict[str, pa.Schema] = {**PARTITIONED, **UNPARTITIONED, **BY_DATASET}


def schema_of(table: str) -> pa.Schema:
    return ALL_TABLES[table]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast columns to ``schema``; a missing or extra column is a bug, so it raises."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise ValueError(f"table does not match its contract: missing {missing}, extra {extra}")
    return table.select(schema.names).cast(schema)
