"""The paper's comparison on held-out questions: SA, SA+MV, MA, MA+MV, MALT, MALT+MV.

Per question and seed we run ``votes`` (3) chains G→V→R twice: once on the untrained base
model and once with the trained adapters (one per role, each falling back to the base when a
role has none). Every system is read off those chains, so the comparison is paired:

- SA: chain 0's generator answer;  SA+MV: majority over the chains' generator answers
- MA: chain 0's refined answer;    MA+MV: majority over the chains' refined answers
- MALT / MALT+MV: the same, from the chains with the trained adapters.

Majority vote groups answers with the dataset's own equivalence check; a tie goes to the
earliest chain. Every prediction is stored with its trajectory, and accuracy is SQL over the
stored predictions (``sql/evaluation/scores.sql``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from malt_lake import schemas
from malt_lake.backends import Backend, GenerationRequest, SamplingParams
from malt_lake.errors import LakeError
from malt_lake.lake import Lake
from malt_lake.prompts import template
from malt_lake.query import fetch
from malt_lake.rewards import Checker, checker_for
from malt_lake.rewards.base import check

SYSTEMS = ("SA", "SA+MV", "MA", "MA+MV", "MALT", "MALT+MV")
ROLES = ("generator", "verifier", "refiner")
Log = Callable[[str], None]


class EvalSettings(BaseModel):
    """How the held-out comparison is sampled."""

    model_config = ConfigDict(extra="forbid")

    seeds: int = Field(4, ge=1, le=64, description="Independent repeats; accuracy is mean ± "
                       "std over them (paper: several seeds).")
    votes: int = Field(3, ge=1, le=16, description="Parallel chains for majority vote (MV@3).")
    temperature: float = Field(0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(256, ge=1, le=32_768, description="Most new tokens per turn.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N questions.")


@dataclass(frozen=True)
class Turn:
    role: str
    text: str | None
    pred_answer: str | None
    adapter: str | None


def heldout_questions(lake: Lake, dataset: str, split: str, limit: int | None) -> list[dict]:
    rows = fetch(lake, "evaluation/heldout_questions",
                 {"dataset": dataset, "split": split}).to_pylist()
    if not rows:
        raise LakeError(f"no questions of {dataset!r} split {split!r} in the lake; materialize "
                        f"`questions` for the {dataset}.{split}.* partitions first")
    return rows[:limit] if limit else rows


Chains = dict[str, list[list[Turn]]]  # question_id -> [[G, V, R] turns per chain]


def run_chains(backend: Backend, questions: Sequence[dict],
               systems: dict[str, dict[str, str | None]], settings: EvalSettings, seed: int,
               log: Log) -> dict[str, Chains]:
    """``votes`` G→V→R chains per question for every adapter set, with sampling seed ``seed``.

    One backend call per role covers every adapter set (the backend groups requests by
    adapter). Seeds stay one call each: backends that seed per request (vLLM, OpenAI) would
    otherwise give every seed the same samples of the same prompt.
    """
    params = SamplingParams(n=settings.votes, temperature=settings.temperature,
                            max_tokens=settings.max_tokens, seed=seed)
    one = SamplingParams(n=1, temperature=settings.temperature,
                         max_tokens=settings.max_tokens, seed=seed)
    bar = tqdm(total=len(systems) * len(questions) * settings.votes * 3, unit="gen",
               desc=f"eval {' + '.join(systems)} seed {seed}")

    def messages(q: dict, role: str, **extra: str | None) -> list[dict]:
        return template(q["family"], role).render(q["question"], q["choices"], **extra)

    generations = backend.generate(
        [GenerationRequest(q["question_id"], messages(q, "generator"), adapters["generator"])
         for adapters in systems.values() for q in questions], params)
    bar.update(len(systems) * len(questions) * settings.votes)
    chains: dict[str, Chains] = {label: {} for label in systems}
    outs = iter(generations)
    for label, adapters in systems.items():
        for q in questions:
            chains[label][q["question_id"]] = [
                [_turn(q, "generator", o.text, adapters)] for o in next(outs)]
    keys = [(label, q, c) for label in systems for q in questions
            for c in range(settings.votes)]
    for role in ("verifier", "refiner"):
        requests = []
        for label, q, c in keys:
            chain = chains[label][q["question_id"]][c]
            extra = {"answer": chain[0].text or ""}
            if role == "refiner":
                extra["critique"] = chain[1].text or ""
            requests.append(GenerationRequest(f"{q['question_id']}/c{c}/{role}",
                                              messages(q, role, **extra),
                                              systems[label][role]))
        outs = backend.generate(requests, one)
        for (label, q, c), out in zip(keys, outs, strict=True):
            chains[label][q["question_id"]][c].append(
                _turn(q, role, out[0].text, systems[label]))
        bar.update(len(keys))
    bar.close()
    log(f"eval seed {seed}: {len(questions)} questions x {settings.votes} chains for "
        f"{', '.join(systems)} done")
    return chains


def _turn(question: dict, role: str, text: str | None, adapters: dict[str, str | None]) -> Turn:
    pred = None
    if role != "verifier" and text:
        pred = check(checker_for(question["family"]), text, question["answer"],
                     question["choices"]).pred_answer
    return Turn(role, text, pred, adapters[role])


def majority(answers: Sequence[str | None], checker: Checker) -> str | None:
    """The answer most chains agree on (by the checker's equivalence); ties: earliest."""
    best, support = None, 0
    for answer in answers:
        if answer is None:
            continue
        count = sum(1 for other in answers if other is not None
                    and _equivalent(checker, answer, other))
        if count > support:
            best, support = answer, count
    return best


def predictions(questions: Sequence[dict], base: Chains, trained: Chains, seed: int,
                split: str, eval_id: str, model: str) -> list[dict[str, Any]]:
    """One row per (question, system): the prediction, its votes and its trajectory."""
    rows = []
    for q in questions:
        checker = checker_for(q["family"])
        for system in SYSTEMS:
            chains = (trained if system.startswith("MALT") else base)[q["question_id"]]
            turn = 0 if system.startswith("SA") else 2
            voted = system.endswith("+MV")
            used = chains if voted else chains[:1]
            votes = [chain[turn].pred_answer for chain in used]
            pred = majority(votes, checker) if voted else votes[0]
            correct = pred is not None and _equivalent(checker, pred, q["answer"])
            trajectory = [{"chain": c, "role": t.role, "text": t.text,
                           "pred_answer": t.pred_answer, "adapter": t.adapter}
                          for c, chain in enumerate(used) for t in chain[:turn + 1]]
            rows.append({
                "eval_id": eval_id, "dataset": q["dataset"], "split": split, "seed": seed,
                "system": system, "question_id": q["question_id"], "answer": q["answer"],
                "pred_answer": pred, "correct": correct, "votes": votes,
                "trajectory": trajectory, "model": model,
            })
    return rows


def _equivalent(checker: Checker, a: str, b: str) -> bool:
    """The checker's equivalence, never raising on model output."""
    try:
        return a == b or bool(checker.equivalent(a, b))
    except Exception:
        return False


def evaluation_id(model: str, adapters: dict[str, str | None], settings: EvalSettings,
                  dataset: str, split: str) -> str:
    blob = json.dumps({"model": model, "adapters": adapters, "settings": settings.model_dump(),
                       "dataset": dataset, "split": split}, sort_keys=True)
    return "e-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def evaluate(lake: Lake, backend: Backend, dataset: str, split: str,
             adapters: dict[str, str | None], settings: EvalSettings,
             log: Log = print) -> pa.Table:
    """All six systems over ``settings.seeds`` seeds; returns the eval_predictions rows."""
    questions = heldout_questions(lake, dataset, split, settings.limit)
    no_adapters = dict.fromkeys(ROLES)
    eval_id = evaluation_id(backend.model_id, adapters, settings, dataset, split)
    rows: list[dict[str, Any]] = []
    for seed in range(settings.seeds):
        chains = run_chains(backend, questions, {"base": no_adapters, "MALT": adapters},
                            settings, seed, log)
        rows += predictions(questions, chains["base"], chains["MALT"], seed, split, eval_id,
                            backend.model_id)
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_PREDICTIONS)


def scores(lake: Lake, dataset: str) -> pa.Table:
    """Accuracy per system and seed, recomputed in SQL from the stored predictions."""
    return fetch(lake, "evaluation/scores", {"dataset": dataset})


def summary(lake: Lake, dataset: str) -> pa.Table:
    """Mean ± std over seeds per system, in the paper's order."""
    return fetch(lake, "evaluation/summary", {"dataset": dataset})
