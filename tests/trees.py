"""Hand-built MALT trees written straight into a lake, for SQL tests.

A tree spec per question is a list (one per generator sample) of lists (one per critique)
of lists of leaf rewards (1, 0, or None for a failed refinement). A critique given as the
string "failed" is a failed verifier sample with no children.
"""

from __future__ import annotations

import pyarrow as pa

from malt_lake import schemas
from malt_lake.lake import Lake
from malt_lake.lineage import node_fingerprint, question_fingerprint
from malt_lake.names import PartitionKey, critique_id, generation_id, refinement_id

Tree = list[list[list[int | None] | str]]


def _generated(prompt: str, text: str | None, error: str | None, n: int,
               parent_fingerprint: str) -> dict:
    return {
        "parent_fingerprint": parent_fingerprint,
        "fingerprint": node_fingerprint(parent_fingerprint, text, error),
        "prompt": [{"role": "user", "content": prompt}], "text": text,
        "pred_answer": None, "parse_ok": text is not None, "error": error,
        "finish_reason": "stop" if error is None else None, "model": "hand-built",
        "adapter": None, "template_hash": "t", "temperature": 0.3, "top_p": 1.0,
        "max_tokens": 16, "seed": 0, "n_samples": n, "n_prompt_tokens": 1, "n_tokens": 1,
    }


def write_trees(lake: Lake, key: PartitionKey, trees: dict[str, Tree]) -> None:
    part = {"dataset": key.dataset, "shard": key.shard}
    questions, gens, crits, refs, leaves, grewards = [], [], [], [], [], []
    for qi, (qid, tree) in enumerate(trees.items()):
        q_print = question_fingerprint(f"question {qid}", None, "1")
        questions.append({**part, "question_id": qid, "split": key.split, "row_index": qi,
                          "question": f"question {qid}", "choices": None, "answer": "1",
                          "solution": None, "family": "numeric", "source": "hand-built",
                          "stratum": None, "fingerprint": q_print})
        for gi, critiques in enumerate(tree):
            g_id = generation_id(qid, gi)
            gen = {**part, "question_id": qid, "g_idx": gi, "g_id": g_id,
                   **_generated(f"solve {qid}", f"answer {g_id}", None, len(tree), q_print)}
            gens.append(gen)
            grewards.append({**part, "question_id": qid, "g_id": g_id, "pred_answer": "1",
                             "gold_answer": "1", "reward": gi % 2, "parse_ok": True,
                             "checker": "numeric", "fingerprint": gen["fingerprint"]})
            for vi, leaf_rewards in enumerate(critiques):
                v_id = critique_id(g_id, vi)
                failed = leaf_rewards == "failed"
                crit = {**part, "question_id": qid, "g_id": g_id, "v_idx": vi, "v_id": v_id,
                        **_generated(f"critique {g_id}", None if failed else f"critique {v_id}",
                                     "backend error" if failed else None, len(critiques),
                                     gen["fingerprint"])}
                crits.append(crit)
                if failed:
                    continue
                for ri, reward in enumerate(leaf_rewards):
                    r_id = refinement_id(v_id, ri)
                    ref = {**part, "question_id": qid, "g_id": g_id, "v_id": v_id,
                           "r_idx": ri, "r_id": r_id, **_generated(
                               f"refine {v_id}", None if reward is None else f"final {r_id}",
                               "backend error" if reward is None else None,
                               len(leaf_rewards), crit["fingerprint"])}
                    refs.append(ref)
                    leaves.append({**part, "question_id": qid, "g_id": g_id, "v_id": v_id,
                                   "r_idx": ri, "r_id": r_id, "pred_answer": None,
                                   "gold_answer": "1",
                                   "reward": reward, "parse_ok": reward is not None,
                                   "checker": "numeric" if reward is not None else "failed",
                                   "fingerprint": ref["fingerprint"]})
    for table, rows in [("questions", questions), ("generations", gens), ("critiques", crits),
                        ("refinements", refs), ("leaf_rewards", leaves),
                        ("generation_rewards", grewards)]:
        lake.write_partition(table, key,
                             pa.Table.from_pylist(rows, schema=schemas.schema_of(table)))


# The worked example of tests/test_credit.py (n = 3).
WORKED: Tree = [
    [[1, 1, 0], [1, 0, 0], [1, 1, 1]],          # g0: V = 2/3, 1/3, 1    -> V(g0) = 2/3
    [[1, 0, None], [0, 0, 0], "failed"],        # g1: V = 1/2, 0, null   -> V(g1) = 1/4
    [[0, 0, 0], [0, 1, 1], [0, 0, 1]],          # g2: V = 0, 2/3, 1/3    -> V(g2) = 1/3
]
