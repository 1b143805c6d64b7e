"""Rewards for a partition: check every generator answer and every refinement (leaf)."""

from __future__ import annotations

import pyarrow as pa

from malt_lake import schemas
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.rewards import checker_for
from malt_lake.rewards.base import check


def _questions(lake: Lake, key: PartitionKey) -> dict[str, dict]:
    return {row["question_id"]: row for row in lake.read_required("questions", key).to_pylist()}


def score_rows(rows: list[dict], questions: dict[str, dict], id_columns: list[str]) -> list[dict]:
    """One reward row per generated row. A failed sample (error) gets a null reward: it is a
    missing child, not a wrong answer. A sample cut at its token budget (finish_reason
    'length') is scored only on a complete explicit answer marker, never on a stray number."""
    out = []
    for row in rows:
        question = questions[row["question_id"]]
        checker = checker_for(question["family"])
        base = {c: row[c] for c in ["dataset", "shard", "question_id", *id_columns,
                                    "fingerprint"]}
        if row["error"] is not None or row["text"] is None:
            out.append({**base, "pred_answer": None, "gold_answer": question["answer"],
                        "reward": None, "parse_ok": False, "checker": "failed"})
            continue
        result = check(checker, row["text"], question["answer"], question["choices"],
                       truncated=row["finish_reason"] == "length")
        out.append({**base, "pred_answer": result.pred_answer,
                    "gold_answer": question["answer"], "reward": result.reward,
                    "parse_ok": result.parse_ok, "checker": checker.name})
    return out


def leaf_rewards(lake: Lake, key: PartitionKey) -> pa.Table:
    refinements = lake.read_required("refinements", key)
    # r_idx too: credit lets each verifier's first leaf carry its value (an integer compare)
    rows = score_rows(refinements.to_pylist(), _questions(lake, key),
                      ["g_id", "v_id", "r_idx", "r_id"])
    return pa.Table.from_pylist(rows, schema=schemas.LEAF_REWARDS)


def generation_rewards(lake: Lake, key: PartitionKey) -> pa.Table:
    generations = lake.read_required("generations", key)
    rows = score_rows(generations.to_pylist(), _questions(lake, key), ["g_id"])
    return pa.Table.from_pylist(rows, schema=schemas.GENERATION_REWARDS)
