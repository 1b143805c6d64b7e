"""Evaluation: six systems on held-out questions, accuracies recomputable from predictions."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from assets.resources import BackendResource
from malt_lake.backends.base import Completion
from malt_lake.backends.embedded import MODEL_ID
from malt_lake.evaluate import ABLATIONS, ROLES, SYSTEMS, majority
from malt_lake.query import fetch, run_read_only
from malt_lake.rewards import checker_for
from malt_lake.training.store import SFT_STAGE, AdapterStore, write_manifest
from tests.resources import asset_resources

TREE = ["generations", "critiques", "refinements", "generation_rewards", "leaf_rewards",
        "credit", "sft_generator", "sft_verifier", "sft_refiner", "dpo_generator",
        "dpo_verifier", "dpo_refiner"]


def test_majority_vote_uses_equivalence_and_breaks_ties_by_first_chain():
    numeric = checker_for("numeric")
    assert majority(["4", "4.0", "5"], numeric) == "4"
    assert majority(["7", "5", None], numeric) == "7"
    assert majority([None, None, "3"], numeric) == "3"
    assert majority([None, None, None], numeric) is None


FINAL_RE = re.compile(r"Final Answer: (-?\d+)")


def independent_answer(text: str | None) -> str | None:
    """The fake backend writes 'Final Answer: N'; read it without the library's checker."""
    found = FINAL_RE.findall(text or "")
    return found[-1] if found else None


def recompute(lake) -> dict:
    """Accuracy per (system, seed) from the stored trajectories alone: the answer of the turn
    each system reads (G for SA, R for MA/MALT), a plain first-most-common vote for +MV, and
    integer equality with the gold answer, none of it through the library's code."""
    rows = run_read_only(lake, "select * from eval_predictions").to_pylist()
    totals: dict = defaultdict(lambda: [0, 0])
    for row in rows:
        role = "generator" if row["system"].startswith("SA") else "refiner"
        answers = [independent_answer(t["text"]) for t in row["trajectory"]
                   if t["role"] == role]
        if row["system"].endswith("+MV"):
            counts = Counter(a for a in answers if a is not None)
            best = max(counts.values(), default=0)
            pred = next((a for a in answers if a is not None and counts[a] == best), None)
        else:
            pred = answers[0]
        right = pred is not None and int(pred) == int(row["answer"])
        totals[(row["system"], row["seed"])][0] += right
        totals[(row["system"], row["seed"])][1] += 1
    return {k: v[0] / v[1] for k, v in totals.items()}


def fake_adapters(root, dataset: str = "arith") -> None:
    store = AdapterStore(root, dataset)
    for role in ("generator", "verifier", "refiner"):
        with store.building(role, "v-fake") as build:
            write_manifest(build, {"base_model": "fake-deterministic", "role": role})
        store.publish(role, "v-fake")


def ingested(lake, instance) -> dict:
    """The fake-backend resources, after every shard's questions are in the lake."""
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    for key in instance.get_dynamic_partitions("shards"):
        assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=key,
                              instance=instance, resources=resources).success
    return resources


def test_evaluation_plumbing_with_the_fake_backend(lake, instance):
    resources = ingested(lake, instance)
    fake_adapters(lake.root)
    result = dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                            instance=instance, resources=resources, run_config={"ops": {
                                "evaluation": {"config": {"seeds": 2, "max_tokens": 16}}}})
    assert result.success
    n_heldout = run_read_only(lake, "select count(*) n from questions "
                                    "where shard like 'heldout.%'").to_pylist()[0]["n"]
    preds = run_read_only(lake, "select system, seed, count(*) n from eval_predictions "
                                "group by all order by all").to_pylist()
    assert {(r["system"], r["seed"]) for r in preds} == {(s, d) for s in SYSTEMS for d in (0, 1)}
    assert all(r["n"] == n_heldout for r in preds)
    stored = {(r["system"], r["seed"]): r["accuracy"] for r in
              run_read_only(lake, "select * from eval_scores").to_pylist()}
    assert stored == pytest.approx(recompute(lake))
    # a trajectory holds every turn that led to the answer: G only for SA, G,V,R per chain
    lengths = {r["system"]: r["k"] for r in run_read_only(
        lake, "select system, max(len(trajectory)) k from eval_predictions group by all"
    ).to_pylist()}
    assert lengths == {"SA": 1, "SA+MV": 3, "MA": 3, "MA+MV": 9, "MALT": 3, "MALT+MV": 9}
    malt_adapters = run_read_only(lake, """
        select distinct unnest(trajectory).adapter a from eval_predictions
        where system = 'MALT'""").column("a").to_pylist()
    assert all(a and a.endswith("v-fake") for a in malt_adapters)
    # every G and R turn says whether its own answer is right, agreeing with SA and MA
    turn_vs_system = run_read_only(lake, """
        select system, correct, t.correct as turn_correct
        from (select *, trajectory[len(trajectory)] t from eval_predictions
              where system in ('SA', 'MA', 'MALT'))""").to_pylist()
    assert all(r["correct"] == r["turn_correct"] for r in turn_vs_system)
    flip_rows = fetch(lake, "evaluation/flips", {"dataset": "arith"}).to_pylist()
    assert [r["adapter_set"] for r in flip_rows] == ["base", "MALT"]
    for r in flip_rows:
        assert r["chains"] == 2 * n_heldout * 3 == sum(
            r[k] for k in ("correct_kept", "correct_to_incorrect", "incorrect_to_correct",
                           "incorrect_kept"))
        assert r["refiner_accuracy"] == pytest.approx(
            (r["correct_kept"] + r["incorrect_to_correct"]) / r["chains"])
    report = lake.root / "reports" / "eval-arith.md"
    assert "| MALT+MV |" in report.read_text() and report.with_suffix(".png").is_file()
    assert "| base | " in report.read_text()
    meta = result.asset_materializations_for_node("evaluation")[0].metadata
    assert "data:image/png;base64," in meta["chart"].value
    for table in ("eval_scores", "eval_comparisons"):  # the asset's two other tables
        columns = [(c.name, c.type) for c in meta[f"{table}_columns"].schema.columns]
        written = run_read_only(lake, f"select * from {table} limit 0").schema
        assert [name for name, _ in columns] == written.names

    # a rerun with the same inputs replaces the predictions: same ids, same counts
    again = dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                           instance=instance, resources=resources, run_config={"ops": {
                               "evaluation": {"config": {"seeds": 2, "max_tokens": 16}}}})
    assert again.success
    assert run_read_only(lake, "select system, seed, count(*) n from eval_predictions "
                               "group by all order by all").to_pylist() == preds


def test_real_model_evaluation_at_tiny_size(lake, instance, tmp_path):
    """The whole graph with the real embedded model: tree, adapters, six-system table."""
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[[datasets]]\nname = "arith"\nfamily = "numeric"\nshard_size = 2\n'
        '[datasets.splits.train]\nkind = "arithmetic"\ncount = 2\nmax_steps = 1\n'
        '[datasets.splits.heldout]\nkind = "arithmetic"\ncount = 2\nseed = 1\nmax_steps = 1\n'
        'heldout = true\n')
    recipe = tmp_path / "one-step.toml"
    recipe.write_text('base_model = "embedded"\n[sft]\nmax_steps = 1\nbatch_size = 2\n'
                      'min_rows = 1\n[dpo]\nmax_steps = 1\nbatch_size = 2\nmin_rows = 1\n')
    resources = asset_resources(lake, config=config, recipe=recipe,
                                backend=BackendResource(kind="transformers", model="embedded"))
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert sorted(instance.get_dynamic_partitions("shards")) == ["arith.heldout.0000",
                                                                  "arith.train.0000"]
    assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key="arith.heldout.0000",
                          instance=instance, resources=resources).success
    role = {"n": 2, "max_tokens": 24}
    assert dg.materialize(ALL_ASSETS, selection=["questions", *TREE],
                          partition_key="arith.train.0000", instance=instance,
                          resources=resources, run_config={"ops": {
                              a: {"config": role} for a in TREE[:3]}}).success
    adapters = dg.materialize(ALL_ASSETS, instance=instance, resources=resources,
                              partition_key="arith",
                              selection=["generator_adapter", "verifier_adapter",
                                         "refiner_adapter"])
    assert adapters.success
    result = dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                            instance=instance, resources=resources, run_config={"ops": {
                                "evaluation": {"config": {"seeds": 2, "max_tokens": 24}}}})
    assert result.success
    summary = run_read_only(lake, """
        select system, avg(accuracy) acc, count(*) seeds from eval_scores group by all""")
    assert sorted(summary.column("system").to_pylist()) == sorted(SYSTEMS)
    assert set(summary.column("seeds").to_pylist()) == {2}
    stored = {(r["system"], r["seed"]): r["accuracy"] for r in
              run_read_only(lake, "select * from eval_scores").to_pylist()}
    assert stored == pytest.approx(recompute(lake))
    trained = [s for s in ("generator", "verifier", "refiner")
               if AdapterStore(lake.root, "arith").current(s) is not None]
    used = set(run_read_only(lake, """
        select distinct unnest(trajectory).adapter a from eval_predictions
        where system like 'MALT%'""").column("a").to_pylist()) - {None}
    assert len(used) == len(trained)
    models = run_read_only(lake, "select distinct model from eval_predictions").to_pylist()
    assert models == [{"model": MODEL_ID}]


class VLLMLikeBackend:
    """Behaves like vLLM / an OpenAI-compatible server: the text is a pure function of the
    prompt and the sample's seed, and with n > 1 sample i is seeded with seed + i. Generator
    answers take only 3 values, so equal answers (hence equal verifier prompts) are common."""

    model_id = "vllm-like-stub"

    def __init__(self) -> None:
        self.requests: list = []

    def generate(self, requests, params):
        self.requests += requests
        out = []
        for request in requests:
            samples = []
            for i in range(params.n):
                seed = request.seed_or(params) + i
                digest = hashlib.sha256(
                    f"{request.messages}|{seed}".encode()).hexdigest()
                generator = "Proposed" not in request.messages[-1]["content"]
                text = (f"Final Answer: {int(digest, 16) % 3}" if generator
                        else f"sample {digest[:16]}. Final Answer: {int(digest, 16) % 3}")
                samples.append(Completion(text, 1, 1, "stop"))
            out.append(samples)
        return out


def test_chains_and_seeds_are_independent_samples_on_a_seed_per_request_backend():
    """Two chains whose generator answers are equal must still get different critiques and
    refinements, and seed 1 must not replay seed 0's chains (vLLM seeds per request)."""
    from malt_lake.evaluate import EvalSettings, run_chains

    questions = [{"question_id": f"q{i}", "dataset": "arith", "family": "numeric",
                  "question": f"What is {i} + 1?", "choices": None, "answer": str(i + 1),
                  "stratum": None} for i in range(4)]
    backend = VLLMLikeBackend()
    no_adapters = dict.fromkeys(("generator", "verifier", "refiner"))
    turns: dict[str, list] = defaultdict(list)
    for seed in (0, 1, 2):
        chains = run_chains(backend, questions, {"base": no_adapters}, EvalSettings(votes=3),
                            seed, log=lambda m: None)
        for per_question in chains["base"].values():
            for chain in per_question:
                for turn in chain:
                    turns[turn.role].append(turn)
    seeds = [r.seed for r in backend.requests]
    assert None not in seeds and len(set(seeds)) == len(seeds)  # one stream per request
    for role in ("verifier", "refiner"):
        texts = [t.text for t in turns[role]]
        assert len(set(texts)) == len(texts), f"repeated {role} samples"
    generator_texts = [t.text for t in turns["generator"]]
    same_answer = len(generator_texts) - len(set(generator_texts))
    assert same_answer > 0  # the test really had equal answers whose critiques had to differ


def test_each_role_reads_its_turn_and_the_vote_takes_the_majority_of_that_turn():
    """SA = chain 0's generator answer, SA+MV = the majority of the generator answers, MA =
    chain 0's refined answer, MA+MV = the majority of the refined answers; MALT* the same
    from the trained chains. Every number differs, so reading a wrong turn cannot pass."""
    from malt_lake.evaluate import Turn, predictions

    def chains(g: list[str], r: list[str]) -> list[list[Turn]]:
        return [[Turn("generator", f"Final Answer: {a}", a, None),
                 Turn("verifier", "ok", None, None),
                 Turn("refiner", f"Final Answer: {b}", b, None)] for a, b in zip(g, r, strict=True)]

    question = {"question_id": "q", "dataset": "arith", "family": "numeric", "answer": "7"}
    base = {"q": chains(["1", "2", "2"], ["3", "4", "4"])}
    trained = {"q": chains(["5", "6", "6"], ["8", "7", "7"])}
    rows = {r["system"]: r for r in predictions([question], base, trained, 0, "heldout",
                                                "e-test", "m")}
    assert {s: r["pred_answer"] for s, r in rows.items()} == {
        "SA": "1", "SA+MV": "2", "MA": "3", "MA+MV": "4", "MALT": "8", "MALT+MV": "7"}
    assert [s for s, r in rows.items() if r["correct"]] == ["MALT+MV"]
    assert rows["SA+MV"]["votes"] == ["1", "2", "2"]
    assert rows["MALT+MV"]["votes"] == ["8", "7", "7"]


def test_heldout_subsets_are_seeded_stratified_and_differ_between_seeds(datasets_dir):
    from malt_lake.datasets import load_split
    from malt_lake.evaluate import sample_questions
    from malt_lake.settings import DatasetSpec, FileSource

    spec = DatasetSpec(name="math", family="math", splits={
        "dev": FileSource(path=str(datasets_dir / "math" / "dev.jsonl"))})
    heldout = load_split(spec, "dev").frame.to_dicts()
    strata = Counter(q["stratum"] for q in heldout)
    assert len(strata) > 10 and None not in strata  # subject/level kept from the source
    subsets = [sample_questions(heldout, 50, seed, "math") for seed in range(3)]
    assert all(len(s) == 50 for s in subsets)
    ids = [{q["question_id"] for q in s} for s in subsets]
    assert ids[0] != ids[1] != ids[2]  # a fresh subset per seed
    assert sample_questions(heldout, 50, 0, "math") == subsets[0]  # deterministic
    for subset in subsets:  # proportional allocation: each stratum within one of its share
        counts = Counter(q["stratum"] for q in subset)
        for stratum, n in strata.items():
            assert abs(counts[stratum] - 50 * n / len(heldout)) < 1
    subjects = Counter(q["stratum"].split("/")[0] for q in heldout)
    first_by_id = Counter(q["stratum"].split("/")[0]
                          for q in sorted(heldout, key=lambda q: q["question_id"])[:50])
    assert first_by_id != Counter(q["stratum"].split("/")[0] for q in subsets[0])
    assert sum(subjects.values()) == len(heldout)
    assert sample_questions(heldout, None, 0, "math") == heldout


def test_each_seed_evaluates_its_own_random_subset(lake, instance):
    resources = ingested(lake, instance)
    assert dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                          instance=instance, resources=resources, run_config={"ops": {
                              "evaluation": {"config": {"seeds": 3, "limit": 5}}}}).success
    used = {}
    for row in run_read_only(lake, "select seed, question_id from eval_predictions "
                                   "where system = 'SA'").to_pylist():
        used.setdefault(row["seed"], set()).add(row["question_id"])
    assert sorted(used) == [0, 1, 2] and all(len(ids) == 5 for ids in used.values())
    assert len({frozenset(ids) for ids in used.values()}) == 3  # not the first 5 every time
    first_five = sorted(r["question_id"] for r in run_read_only(
        lake, "select question_id from questions where shard like 'heldout.%'").to_pylist())[:5]
    assert any(sorted(ids) != first_five for ids in used.values())


def test_ablations_are_more_adapter_sets_that_share_the_base_and_malt_turns(lake, instance):
    resources = ingested(lake, instance)
    fake_adapters(lake.root)
    store = AdapterStore(lake.root, "arith")
    for role in ("verifier", "refiner"):  # DPO ran: the SFT stage sits inside the adapter
        (store.current(role) / SFT_STAGE).mkdir(parents=True)
        (store.current(role) / SFT_STAGE / "adapter_config.json").write_text("{}")
    result = dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                            instance=instance, resources=resources, run_config={"ops": {
                                "evaluation": {"config": {"seeds": 2, "limit": 4,
                                                          "max_tokens": 16,
                                                          "ablations": True}}}})
    assert result.success
    turns = run_read_only(lake, """
        select system, seed, question_id, t.chain, t.role, t.text,
               regexp_extract(t.adapter, '(v-fake(/stages/sft)?)$') as adapter
        from (select *, unnest(trajectory) t from eval_predictions where system like '%+MV')
        """).to_pylist()
    systems = {r["system"] for r in turns}
    assert systems == {"SA+MV", "MA+MV", "MALT+MV"} | {f"{a}+MV" for a in ABLATIONS}
    adapter = {(r["system"], r["role"]): r["adapter"] or None for r in turns}
    sft = "v-fake/stages/sft"
    assert [adapter[("MALT(G)+MV", role)] for role in ROLES] == ["v-fake", None, None]
    assert [adapter[("MALT(V+R)+MV", role)] for role in ROLES] == [None, "v-fake", "v-fake"]
    assert [adapter[("MALT(V+R SFT)+MV", role)] for role in ROLES] == [None, sft, sft]
    text = {(r["system"], r["seed"], r["question_id"], r["chain"], r["role"]): r["text"]
            for r in turns}
    generator = [k for k in text if k[4] == "generator"]
    # a role untrained in two adapter sets is the same request: the same turn
    assert all(text[k] == text[("MA+MV", *k[1:])] for k in generator
               if k[0] in ("MALT(V+R)+MV", "MALT(V+R SFT)+MV"))
    assert all(text[k] == text[("MALT+MV", *k[1:])] for k in generator if k[0] == "MALT(G)+MV")
    assert any(text[k] != text[("MA+MV", *k[1:])] for k in generator if k[0] == "MALT+MV")

    pairs = [(r["system"], r["baseline"]) for r in run_read_only(
        lake, "select * from eval_comparisons").to_pylist()]
    assert pairs[:4] == [("MALT", "MA"), ("MALT", "SA"), ("MALT+MV", "MA+MV"),
                         ("MALT+MV", "SA+MV")]
    assert {(f"{a}+MV", "MA+MV") for a in ABLATIONS} <= set(pairs)
    stages = set(run_read_only(lake, "select stage from truncation where stage like 'eval %'"
                               ).column("stage").to_pylist())
    assert stages == {"eval base", "eval MALT"} | {f"eval {a}" for a in ABLATIONS}
    report = (lake.root / "reports" / "eval-arith.md").read_text()
    assert "| MALT(V+R SFT)+MV − MA+MV |" in report and "within noise" in report
