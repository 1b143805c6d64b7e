"""Role training with TRL + peft on the real embedded model, at a few steps."""

from __future__ import annotations

import json
import math

import dagster as dg
import pytest
import torch

from assets.definitions import ALL_ASSETS
from assets.resources import BackendResource
from malt_lake.errors import ConfigError
from malt_lake.query import run_read_only
from malt_lake.training import load_recipe, recipe_names
from malt_lake.training.store import AdapterStore
from tests.resources import asset_resources

KEY = "arith.train.0000"
TREE = ["questions", "generations", "critiques", "refinements", "generation_rewards",
        "leaf_rewards", "credit", "sft_generator", "sft_verifier", "sft_refiner",
        "dpo_generator", "dpo_verifier", "dpo_refiner"]


def test_every_recipe_parses_with_the_papers_shape():
    assert {"cpu-smollm2", "gpu-qwen2.5-1.5b", "gpu-llama3.1-8b"} <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.role("generator").dpo is None  # G: SFT only
        for role in ("verifier", "refiner"):
            assert recipe.role(role).dpo is not None and recipe.role(role).dpo.beta == 0.2
        assert recipe.lora.r > 0 and recipe.lora.target_modules


@pytest.mark.parametrize(("body", "message"), [
    ('base_model = "embedded"\n[sft]\nlearning_rate = -1\n', "learning_rate must be > 0"),
    ('base_model = "embedded"\n[sft]\nlearnin_rate = 1e-4\n', "unknown keys in [sft]"),
    ('[sft]\nlearning_rate = 1e-4\n', "base_model is required"),
    ('base_model = "embedded"\n[roles.critic]\n', "unknown roles"),
    ('base_model = "embedded"\n[dpo]\nbeta = 0\n', "beta must be > 0"),
    ('base_model = "embedded"\n[lora]\nr = 0\n', "r must be > 0"),
    ('base_model = "embedded"\nnot toml at all', "not valid TOML"),
    ('base_model = "embedded"\nautocast = "fp8"\n', "autocast must be one of none, bf16"),
    ('base_model = "embedded"\ndtype = "float64"\n', "dtype must be one of"),
])
def test_bad_recipe_names_the_file_and_the_problem(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=r"bad\.toml") as error:
        load_recipe(str(path))
    assert message in str(error.value)


def test_unknown_recipe_lists_the_built_in_ones():
    with pytest.raises(ConfigError, match="cpu-smollm2"):
        load_recipe("no-such-recipe")


def _tiny_sft_dataset():
    from datasets import Dataset

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i + 2}?"}],
             "completion": [{"role": "assistant",
                             "content": f"{i} + {i + 2} = {2 * i + 2}. Final Answer: {2 * i + 2}"}]}
            for i in range(8)]
    return Dataset.from_list(rows)


def test_sft_changes_only_the_adapter_and_the_adapter_changes_generation(tmp_path):
    from malt_lake.backends.transformers_backend import TransformersBackend, resolve_model
    from malt_lake.training.trainer import load_base, train_sft

    recipe = load_recipe("cpu-smollm2").with_stages(max_steps=3)
    _, source = resolve_model("embedded")
    model, tokenizer = load_base(source, "float32")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    peft_model, result = train_sft(model, tokenizer, _tiny_sft_dataset(),
                                   recipe.role("generator").sft, recipe.lora, 0,
                                   tmp_path / "scratch", log=lambda m: None)
    assert result.steps == 3 and len(result.loss_history) == 3
    assert all(math.isfinite(loss) for _, loss in result.loss_history)
    state = peft_model.state_dict()
    base_keys = [k for k in state if "lora_" not in k]
    for key in base_keys:  # base weights unchanged (peft prefixes 'base_model.model.')
        original = key.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(state[key], before[original]), key
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)

    backend = TransformersBackend("embedded", dtype="float32")
    ids = torch.tensor([tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 + 5?"}], add_generation_prompt=True,
        tokenize=True, return_dict=False)])
    with torch.inference_mode():
        base_logits = backend.model(input_ids=ids).logits
        backend._use_adapter(str(adapter))
        tuned_logits = backend.model(input_ids=ids).logits
        backend._use_adapter(None)
        base_again = backend.model(input_ids=ids).logits
        unmerged_logits = peft_model.eval()(input_ids=ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)
    # the backend merges the adapter into the weights: same model as peft's unmerged forward
    assert torch.allclose(tuned_logits, unmerged_logits, atol=1e-4)
    assert torch.equal(base_logits, base_again)  # switching back restores the base exactly


@pytest.fixture
def fake_tree_lake(lake, instance):
    """One partition's tree and role datasets, expanded by the fake backend (fast)."""
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert dg.materialize(ALL_ASSETS, selection=TREE, partition_key=KEY, instance=instance,
                          resources=resources).success
    return lake, resources


@pytest.fixture
def dpo_logs(monkeypatch) -> list[list[dict]]:
    """TRL's log history of every DPO stage trained in the test (the manifest keeps only the
    loss; TRL also logs each step's implicit rewards): a spy subclass of DPOTrainer that
    changes nothing in training."""
    import trl

    logs: list[list[dict]] = []

    class SpyDPOTrainer(trl.DPOTrainer):
        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:
                logs.append([dict(h) for h in self.state.log_history])

    monkeypatch.setattr(trl, "DPOTrainer", SpyDPOTrainer)
    return logs


def _completion_logprob(model, tokenizer, prompt: list[dict], answer: list[dict]) -> float:
    """Summed log-probability of ``answer``'s tokens after ``prompt`` (chat template)."""
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
    assert full[:len(head)] == head
    ids = torch.tensor([full])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    token_logps = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return token_logps[len(head) - 1:].sum().item()


def _sft_minus_base_logprobs(sft_dir, pairs: list[dict]) -> list[float]:
    """log p_SFT(chosen) - log p_base(chosen) for each distinct chosen answer of ``pairs``:
    what DPO's step-1 chosen reward (over beta) would be if its reference were the bare base."""
    from peft import PeftModel

    from malt_lake.backends.transformers_backend import resolve_model
    from malt_lake.training.trainer import load_base

    base, tokenizer = load_base(resolve_model("embedded")[1], "float32")
    model = PeftModel.from_pretrained(base, sft_dir).eval()
    distinct = {json.dumps([p["prompt"], p["chosen"]]): p for p in pairs}.values()
    shifts = []
    for pair in distinct:
        tuned = _completion_logprob(model, tokenizer, pair["prompt"], pair["chosen"])
        with model.disable_adapter():
            bare = _completion_logprob(model, tokenizer, pair["prompt"], pair["chosen"])
        shifts.append(tuned - bare)
    return shifts


def test_refiner_sft_then_dpo_from_lake_tables_to_manifest(fake_tree_lake, instance, dpo_logs):
    from safetensors.torch import load_file

    lake, resources = fake_tree_lake
    sizes = {r["role"]: r for r in
             run_read_only(lake, "select * from pairs_per_role").to_pylist()}
    result = dg.materialize(ALL_ASSETS, selection=["refiner_adapter"], instance=instance,
                            resources=resources, partition_key="arith",
                            run_config={"ops": {"refiner_adapter": {"config": {"max_steps": 2}}}})
    assert result.success
    directory = AdapterStore(lake.root, "arith").current("refiner")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["role"] == "refiner" and manifest["theta"] == [0.5]
    assert manifest["data"]["sft"]["rows"] == sizes["refiner"]["sft_examples"]
    assert manifest["data"]["dpo"]["rows"] == sizes["refiner"]["dpo_pairs"]
    sft, dpo = manifest["stages"]["sft"], manifest["stages"]["dpo"]
    assert sft["steps"] == 2 and dpo["steps"] == 2
    assert (directory / "adapter_model.safetensors").is_file()
    sft_dir = directory / "stages" / "sft"
    assert (sft_dir / "adapter_model.safetensors").is_file()
    assert not (directory / "ref").exists()  # only the trained adapter is kept

    # The SFT stage moved the adapter: LoRA's B matrices start at zero.
    sft_weights = load_file(sft_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in sft_weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    # The CPU recipe's base is bf16; the adapters it trains stay float32 (peft upcasts them),
    # and both stages scored only the completion tokens with the compact head.
    assert manifest["recipe"]["dtype"] == "bfloat16"
    dpo_weights = load_file(directory / "adapter_model.safetensors")
    assert {v.dtype for v in [*sft_weights.values(), *dpo_weights.values()]} == {torch.float32}
    assert sft["lm_head"] == dpo["lm_head"] == "compact-cpu"
    # ... by enough to show in DPO's rewards: with the bare base as reference, step 1's chosen
    # reward would be about beta * (log p_SFT - log p_base) averaged over the batch's chosen
    # answers. SFT raised every chosen answer (they are its positives) by far more than the
    # 1e-3 tolerance on the rewards below, whichever pairs the first batch draws.
    beta = manifest["recipe"]["roles"]["refiner"]["dpo"]["beta"]
    pairs = run_read_only(lake, "select prompt, chosen from dpo_refiner").to_pylist()
    shifts = _sft_minus_base_logprobs(sft_dir, pairs)
    assert beta * min(shifts) > 0.05, shifts
    # DPO's first step compares the policy with its reference before any update: when the
    # reference is the SFT adapter (not the bare base) the two agree, so the implicit rewards
    # are 0 and the loss is ln 2.
    assert len(dpo_logs) == 1
    first = next(h for h in dpo_logs[0] if h.get("step") == 1 and "loss" in h)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-3)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-3)
    assert dpo["loss_history"][0][0] == 1 and first["loss"] == dpo["loss_history"][0][1]
    assert dpo["loss_history"][0][1] == pytest.approx(math.log(2), abs=1e-4)
    meta = result.asset_materializations_for_node("refiner_adapter")[0].metadata
    assert meta["status"].value == "trained" and "| step | loss |" in meta["dpo_loss_curve"].value
    assert meta["loss_chart"].value.startswith("![loss](data:image/png;base64,iVBOR")

    again = dg.materialize(ALL_ASSETS, selection=["refiner_adapter"], instance=instance,
                           resources=resources, partition_key="arith",
                           run_config={"ops": {"refiner_adapter": {"config": {"max_steps": 2}}}})
    meta = again.asset_materializations_for_node("refiner_adapter")[0].metadata
    assert meta["status"].value == "reused" and meta["version"].value == manifest["version"]
    assert len(dpo_logs) == 1  # reused: nothing trained again


def test_a_role_with_too_few_rows_is_skipped_with_a_reason(fake_tree_lake, instance, tmp_path):
    lake, resources = fake_tree_lake
    recipe = tmp_path / "strict.toml"
    recipe.write_text('base_model = "embedded"\n[sft]\nmin_rows = 100000\n')
    result = dg.materialize(ALL_ASSETS, selection=["generator_adapter"], instance=instance,
                            partition_key="arith",
                            resources=resources, run_config={"ops": {"generator_adapter": {
                                "config": {"recipe": str(recipe)}}}})
    assert result.success
    meta = result.asset_materializations_for_node("generator_adapter")[0].metadata
    assert meta["status"].value == "skipped" and "min_rows" in meta["reason"].value
    assert AdapterStore(lake.root, "arith").current("generator") is None


def test_recipe_for_another_base_model_is_refused_before_training(fake_tree_lake, instance):
    lake, resources = fake_tree_lake
    resources = {**resources, "backend": BackendResource(kind="transformers", model="embedded")}
    result = dg.materialize(ALL_ASSETS, selection=["generator_adapter"], instance=instance,
                            partition_key="arith",
                            resources=resources, raise_on_error=False, run_config={"ops": {
                                "generator_adapter": {"config": {"recipe": "gpu-qwen2.5-1.5b"}}}})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "adapters must match the served model" in str(failure.step_failure_data.error)
    assert AdapterStore(lake.root, "arith").current("generator") is None
