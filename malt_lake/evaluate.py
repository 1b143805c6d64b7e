"""The paper's comparison on held-out questions: SA, SA+MV, MA, MA+MV, MALT, MALT+MV.

Per question and seed we run ``votes`` (3) chains G→V→R twice: once on the untrained base
model and once with the trained adapters (one per role, each falling back to the base when a
role has none). Every system is read off those chains, so the comparison is paired:

- SA: chain 0's generator answer;  SA+MV: majority over the chains' generator answers
- MA: chain 0's refined answer;    MA+MV: majority over the chains' refined answers
- MALT / MALT+MV: the same, from the chains with the trained adapters.
- Ablations (optional, the paper's): MALT(G) trains only the generator, MALT(V+R) only the
  verifier and refiner, MALT(V+R SFT) the verifier and refiner with SFT alone (no DPO); each
  is one more adapter set read off the same way, with and without +MV.

Majority vote groups answers with the dataset's own equivalence check; a tie goes to the
earliest chain. Every prediction is stored with its trajectory, and accuracy is SQL over the
stored predictions (``sql/evaluation/scores.sql``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from malt_lake import schemas, stats
from malt_lake.backends import (
    Backend,
    Completion,
    GenerationRequest,
    SamplingParams,
    request_seed,
)
from malt_lake.budgets import TokenBudgets, family_budgets
from malt_lake.errors import LakeError
from malt_lake.lake import Lake
from malt_lake.names import ROLES
from malt_lake.prompts import shared_stop, template
from malt_lake.query import fetch
from malt_lake.rewards import Checker, checker_for
from malt_lake.rewards.base import check
from malt_lake.training.store import MANIFEST

SYSTEMS = ("SA", "SA+MV", "MA", "MA+MV", "MALT", "MALT+MV")
ABLATIONS = ("MALT(G)", "MALT(V+R)", "MALT(V+R SFT)")
AdapterSet = dict[str, str | None]  # role -> adapter dir, None = the base model
Log = Callable[[str], None]


class EvalSettings(BaseModel):
    """How the held-out comparison is sampled."""

    model_config = ConfigDict(extra="forbid")

    seeds: int = Field(4, ge=1, le=64, description="Independent repeats; accuracy is mean ± "
                       "std over them (paper: several seeds).")
    votes: int = Field(3, ge=1, le=16, description="Parallel chains for majority vote (MV@3).")
    temperature: float = Field(0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, le=32_768, description="Most new tokens per "
                                   "turn for every role; None = the dataset's token budgets.")
    limit: int | None = Field(None, ge=1, description="Questions per seed: a random subset "
                              "drawn anew for each seed (stratified by subject/level where the "
                              "dataset has them); None = the whole held-out split.")


@dataclass(frozen=True)
class Turn:
    role: str
    text: str | None
    pred_answer: str | None
    adapter: str | None
    finish_reason: str | None = None
    n_prompt_tokens: int = 0
    n_tokens: int = 0
    request_seed: int | None = None
    correct: bool | None = None  # the turn's own answer is right (G and R; None for V)


def heldout_questions(lake: Lake, dataset: str, split: str) -> list[dict]:
    rows = fetch(lake, "evaluation/heldout_questions",
                 {"dataset": dataset, "split": split}).to_pylist()
    if not rows:
        raise LakeError(f"no questions of {dataset!r} split {split!r} in the lake; materialize "
                        f"`questions` for the {dataset}.{split}.* partitions first")
    return rows


def sample_questions(questions: Sequence[dict], size: int | None, seed: int,
                     dataset: str) -> list[dict]:
    """A seeded random subset of ``size`` questions, stratified by ``stratum`` (proportional
    allocation, largest remainders); every question when ``size`` is None or covers them.
    Taking the first N by id instead would skew the mix (MATH dev's first 100 ids are 47%
    algebra against 30% overall) and give every seed the same questions."""
    if size is None or size >= len(questions):
        return list(questions)
    rng = random.Random(f"heldout|{dataset}|{seed}")
    strata: dict[str, list[dict]] = {}
    for q in sorted(questions, key=lambda q: q["question_id"]):
        strata.setdefault(q.get("stratum") or "", []).append(q)
    exact = {name: size * len(rows) / len(questions) for name, rows in strata.items()}
    quota = {name: int(share) for name, share in exact.items()}
    by_remainder = sorted(strata, key=lambda name: (-(exact[name] - quota[name]), rng.random()))
    for name in by_remainder[:size - sum(quota.values())]:
        quota[name] += 1
    chosen = [q for name, rows in strata.items() for q in rng.sample(rows, quota[name])]
    return sorted(chosen, key=lambda q: q["question_id"])


Chains = dict[str, list[list[Turn]]]  # question_id -> [[G, V, R] turns per chain]


def run_chains(backend: Backend, questions: Sequence[dict],
               systems: dict[str, AdapterSet], settings: EvalSettings, seed: int,
               log: Log, budgets: TokenBudgets | None = None,
               prompts: str | None = None, cut_loops: bool = False) -> dict[str, Chains]:
    """``votes`` G→V→R chains per question for every adapter set, with run seed ``seed``.

    Every request is one chain's turn (n = 1) with a seed of its own derived from (run seed,
    question, chain, role): backends that seed per request (vLLM, OpenAI-compatible servers)
    would otherwise return identical critiques for identical answers, and n-sampling that
    seeds sample i with seed + i would make seed 1's chain 0 seed 0's chain 1. Requests that
    are identical (same adapter, prompt and seed, e.g. an untrained role's turn in both
    adapter sets) are generated once, so such chains match exactly. One backend call per
    role covers every adapter set (the backend groups requests by adapter). Prompts come from
    the prompt set ``prompts`` (None: each question's family's own) and looping turns end
    early with ``cut_loops``, as in expansion."""
    budgets = budgets or TokenBudgets.uniform(settings.max_tokens or 256)
    keys = [(label, q, c) for label in systems for q in questions
            for c in range(settings.votes)]
    chains: dict[str, Chains] = {label: {q["question_id"]: [[] for _ in range(settings.votes)]
                                         for q in questions} for label in systems}
    bar = tqdm(total=len(keys) * 3, unit="gen", desc=f"eval {' + '.join(systems)} seed {seed}")
    for role in ROLES:
        tokens = settings.max_tokens or budgets.for_role(role)
        templates = {q["family"]: template(prompts or q["family"], role) for q in questions}
        params = SamplingParams(n=1, temperature=settings.temperature, max_tokens=tokens,
                                seed=seed, stop=shared_stop(templates.values()),
                                cut_loops=cut_loops)
        requests = []
        for label, q, c in keys:
            chain = chains[label][q["question_id"]][c]
            extra = {}
            if role != "generator":
                extra["answer"] = chain[0].text or ""
            if role == "refiner":
                extra["critique"] = chain[1].text or ""
            requests.append(GenerationRequest(
                f"{q['question_id']}/c{c}/{role}",
                templates[q["family"]].render(q["question"], q["choices"], **extra),
                systems[label][role], seed=request_seed(seed, "eval", q["question_id"], c, role)))
        outs = _generate_unique(backend, requests, params)
        for (label, q, c), request, out in zip(keys, requests, outs, strict=True):
            chains[label][q["question_id"]][c].append(_turn(q, role, out[0], request))
        bar.update(len(keys))
    bar.close()
    log(f"eval seed {seed}: {len(questions)} questions x {settings.votes} chains for "
        f"{', '.join(systems)} done")
    return chains


def _generate_unique(backend: Backend, requests: list[GenerationRequest],
                     params: SamplingParams) -> list[list[Completion]]:
    """Generate each distinct request once; duplicates share its completions."""
    index: dict[tuple, int] = {}
    unique: list[GenerationRequest] = []
    slots = []
    for request in requests:
        key = (request.adapter, request.seed, json.dumps(request.messages))
        if key not in index:
            index[key] = len(unique)
            unique.append(request)
        slots.append(index[key])
    outs = backend.generate(unique, params)
    return [outs[slot] for slot in slots]


def _turn(question: dict, role: str, out: Completion, request: GenerationRequest) -> Turn:
    pred, correct = None, None
    if role != "verifier":
        correct = False
        if out.text:
            result = check(checker_for(question["family"]), out.text, question["answer"],
                           question["choices"], truncated=out.finish_reason == "length")
            pred, correct = result.pred_answer, result.reward == 1
    return Turn(role, out.text, pred, request.adapter, out.finish_reason, out.n_prompt_tokens,
                out.n_tokens, request.seed, correct)


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
                split: str, eval_id: str, model: str,
                ablations: dict[str, Chains] | None = None) -> list[dict[str, Any]]:
    """One row per (question, system): the prediction, its votes and its trajectory.
    ``ablations`` maps more trained adapter sets (e.g. "MALT(G)") to their chains; each adds
    the systems "<label>" and "<label>+MV"."""
    read_off = [(system, trained if system.startswith("MALT") else base) for system in SYSTEMS]
    for label, chains in (ablations or {}).items():
        read_off += [(label, chains), (f"{label}+MV", chains)]
    rows = []
    for q in questions:
        checker = checker_for(q["family"])
        for system, source in read_off:
            chains = source[q["question_id"]]
            turn = 0 if system.startswith("SA") else 2
            voted = system.endswith("+MV")
            used = chains if voted else chains[:1]
            votes = [chain[turn].pred_answer for chain in used]
            pred = majority(votes, checker) if voted else votes[0]
            correct = pred is not None and _equivalent(checker, pred, q["answer"])
            trajectory = [{"chain": c, **asdict(t)}
                          for c, chain in enumerate(used) for t in chain[:turn + 1]]
            rows.append({
                "eval_id": eval_id, "dataset": q["dataset"], "split": split, "seed": seed,
                "system": system, "question_id": q["question_id"], "answer": q["answer"],
                "pred_answer": pred, "correct": correct, "votes": votes,
                "trajectory": trajectory, "model": model,
            })
    return rows


def ablation_sets(adapters: AdapterSet, sft_adapters: AdapterSet) -> dict[str, AdapterSet]:
    """The paper's ablations as adapter sets: only G trained; only V and R; V and R with
    their SFT stage alone (``sft_adapters``: each role's adapter before DPO)."""
    return {
        "MALT(G)": {"generator": adapters["generator"], "verifier": None, "refiner": None},
        "MALT(V+R)": {"generator": None, "verifier": adapters["verifier"],
                      "refiner": adapters["refiner"]},
        "MALT(V+R SFT)": {"generator": None, "verifier": sft_adapters["verifier"],
                          "refiner": sft_adapters["refiner"]},
    }


def _equivalent(checker: Checker, a: str, b: str) -> bool:
    """The checker's equivalence, never raising on model output."""
    try:
        return a == b or bool(checker.equivalent(a, b))
    except Exception:
        return False


def evaluation_id(model: str, adapters: AdapterSet, settings: EvalSettings,
                  dataset: str, split: str, budgets: TokenBudgets | None = None,
                  ablations: dict[str, AdapterSet] | None = None,
                  prompts: str | None = None, cut_loops: bool = False) -> str:
    blob = json.dumps({"model": model, "adapters": _identities(adapters),
                       "settings": settings.model_dump(),
                       "dataset": dataset, "split": split,
                       "budgets": budgets.model_dump() if budgets else None,
                       **({"ablations": {name: _identities(s) for name, s in ablations.items()}}
                          if ablations else {}),
                       **({"prompts": _prompt_hashes(prompts)} if prompts else {}),
                       **({"cut_loops": True} if cut_loops else {})},
                      sort_keys=True)
    return "e-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _identities(adapters: AdapterSet) -> dict[str, str | None]:
    """Each adapter by what it is, not where this machine keeps it: a store's adapter by its
    version (a hash of base model, recipe and rows) and the stage inside it, so machines
    sharing a warehouse agree on the evaluation's id; any other adapter by its path."""
    out: dict[str, str | None] = {}
    for role, path in adapters.items():
        out[role] = path
        if path is not None:
            directory = Path(path)
            for version in (directory, *directory.parents[:2]):
                if (version / MANIFEST).is_file():
                    out[role] = str(Path(version.name) / directory.relative_to(version))
                    break
    return out


def _prompt_hashes(prompts: str) -> dict[str, str]:
    return {role: template(prompts, role).hash for role in ROLES}


def evaluate(lake: Lake, backend: Backend, dataset: str, split: str,
             adapters: AdapterSet, settings: EvalSettings,
             budgets: TokenBudgets | None = None, log: Log = print,
             ablations: dict[str, AdapterSet] | None = None,
             prompts: str | None = None, cut_loops: bool = False) -> pa.Table:
    """All six systems (and the ``ablations`` adapter sets, if given) over ``settings.seeds``
    seeds, each seed on its own random subset of the held-out split (``settings.limit``);
    returns the eval_predictions rows, which record the questions every seed used. Turns
    that are the same request in two adapter sets (a role untrained in both) are generated
    once, so ablations share the base and MALT chains where they can."""
    heldout = heldout_questions(lake, dataset, split)
    budgets = budgets or family_budgets(heldout[0]["family"])
    ablations = ablations or {}
    clash = set(ablations) & {"base", "MALT"}
    if clash:
        raise ValueError(f"ablation labels {sorted(clash)} are taken")
    eval_id = evaluation_id(backend.model_id, adapters, settings, dataset, split, budgets,
                            ablations, prompts, cut_loops)
    rows: list[dict[str, Any]] = []
    for seed in range(settings.seeds):
        questions = sample_questions(heldout, settings.limit, seed, dataset)
        chains = run_chains(backend, questions, {"base": dict.fromkeys(ROLES),
                                                 "MALT": adapters, **ablations},
                            settings, seed, log, budgets, prompts, cut_loops)
        rows += predictions(questions, chains["base"], chains["MALT"], seed, split, eval_id,
                            backend.model_id, {label: chains[label] for label in ablations})
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_PREDICTIONS)


def statistics(lake: Lake, dataset: str, resamples: int = stats.RESAMPLES
               ) -> tuple[dict[str, stats.Interval], pa.Table]:
    """Each system's accuracy interval and the paired comparisons (eval_comparisons rows),
    from the stored predictions."""
    cells = fetch(lake, "evaluation/cells", {"dataset": dataset})
    return (stats.system_intervals(cells, resamples),
            stats.comparisons(cells, resamples=resamples))


def flips(lake: Lake, dataset: str) -> pa.Table:
    """Per adapter set: how often V and R keep, break or fix the generator's answer."""
    return fetch(lake, "evaluation/flips", {"dataset": dataset})


def stored_comparisons(lake: Lake, dataset: str) -> pa.Table:
    """The eval_comparisons rows of the dataset's last evaluation."""
    return fetch(lake, "evaluation/comparisons", {"dataset": dataset})


def scores(lake: Lake, dataset: str) -> pa.Table:
    """Accuracy per system and seed, recomputed in SQL from the stored predictions."""
    return fetch(lake, "evaluation/scores", {"dataset": dataset})


def summary(lake: Lake, dataset: str) -> pa.Table:
    """Mean ± std over seeds per system, in the paper's order."""
    return fetch(lake, "evaluation/summary", {"dataset": dataset})
