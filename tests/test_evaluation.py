"""Evaluation: six systems on held-out questions, accuracies recomputable from predictions."""

from __future__ import annotations

from collections import defaultdict

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from assets.resources import BackendResource
from malt_lake.backends.embedded import MODEL_ID
from malt_lake.evaluate import SYSTEMS, majority
from malt_lake.query import run_read_only
from malt_lake.rewards import checker_for
from malt_lake.training.store import AdapterStore, write_manifest
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


def recompute(lake) -> dict:
    """Accuracy per (system, seed) from the stored predictions, checked again in Python."""
    rows = run_read_only(lake, "select * from eval_predictions").to_pylist()
    checker = checker_for("numeric")
    totals: dict = defaultdict(lambda: [0, 0])
    for row in rows:
        right = row["pred_answer"] is not None and checker.equivalent(row["pred_answer"],
                                                                      row["answer"])
        assert right == row["correct"], row
        totals[(row["system"], row["seed"])][0] += right
        totals[(row["system"], row["seed"])][1] += 1
    return {k: v[0] / v[1] for k, v in totals.items()}


def fake_adapters(root) -> None:
    store = AdapterStore(root)
    for role in ("generator", "verifier", "refiner"):
        with store.building(role, "v-fake") as build:
            write_manifest(build, {"base_model": "fake-deterministic", "role": role})
        store.publish(role, "v-fake")


def test_evaluation_plumbing_with_the_fake_backend(lake, instance):
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    for key in instance.get_dynamic_partitions("shards"):
        assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=key,
                              instance=instance, resources=resources).success
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
    report = lake.root / "reports" / "eval-arith.md"
    assert "| MALT+MV |" in report.read_text() and report.with_suffix(".png").is_file()
    meta = result.asset_materializations_for_node("evaluation")[0].metadata
    assert "data:image/png;base64," in meta["chart"].value

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
               if AdapterStore(lake.root).current(s) is not None]
    used = set(run_read_only(lake, """
        select distinct unnest(trajectory).adapter a from eval_predictions
        where system like 'MALT%'""").column("a").to_pylist()) - {None}
    assert len(used) == len(trained)
    models = run_read_only(lake, "select distinct model from eval_predictions").to_pylist()
    assert models == [{"model": MODEL_ID}]


def test_each_seed_reaches_the_backend_as_its_sampling_seed():
    """vLLM and OpenAI-compatible servers seed per request from SamplingParams.seed alone:
    seeds must arrive there, or every seed would draw the same samples of the same prompt."""
    from malt_lake.backends.base import Completion
    from malt_lake.evaluate import EvalSettings, run_chains

    class SeedPerRequestBackend:  # answers depend on the prompt and params.seed only
        model_id = "stub"

        def __init__(self) -> None:
            self.seeds: list[int] = []

        def generate(self, requests, params):
            self.seeds.append(params.seed)
            return [[Completion(f"Final Answer: {params.seed * 10 + k}", 1, 1, "stop")
                     for k in range(params.n)] for _ in requests]

    question = {"question_id": "q0", "dataset": "arith", "family": "numeric",
                "question": "What is 1 + 1?", "choices": None, "answer": "2"}
    backend = SeedPerRequestBackend()
    no_adapters = dict.fromkeys(("generator", "verifier", "refiner"))
    firsts = []
    for seed in (0, 1):
        chains = run_chains(backend, [question], {"base": no_adapters}, EvalSettings(),
                            seed, log=lambda m: None)
        firsts.append(chains["base"]["q0"][0][0].pred_answer)
    assert backend.seeds == [0, 0, 0, 1, 1, 1]  # G, V, R calls of each seed
    assert firsts[0] != firsts[1]
