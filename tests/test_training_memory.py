"""Training holds one base model, never trains on cut rows, and adapters survive bf16.

Real embedded model, tiny datasets built here, one or two steps.
"""

from __future__ import annotations

import dataclasses
import math

import pyarrow as pa
import pytest
import torch

from malt_lake.backends.transformers_backend import resolve_model
from malt_lake.training import load_recipe
from malt_lake.training.config import Recipe, RoleRecipe
from malt_lake.training.data import RoleExamples, sequence_lengths, within_max_length
from malt_lake.training.trainer import StageResult

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _source():
    return resolve_model("embedded")[1]


def _messages(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def _sft_rows(n: int, long: int = 0) -> RoleExamples:
    """``n`` short prompt/completion rows, then ``long`` rows with a ~400-token completion."""
    rows = [{"prompt": _messages("user", f"What is {i} + {i + 2}?"),
             "completion": _messages("assistant", f"{i} + {i + 2} = {2 * i + 2}. "
                                                  f"Final Answer: {2 * i + 2}")}
            for i in range(n)]
    rows += [{"prompt": _messages("user", "Count to two hundred."),
              "completion": _messages("assistant", " ".join(str(k) for k in range(200)))}
             for _ in range(long)]
    return _examples(rows)


def _dpo_rows(n: int, long_rejected: int = 0) -> RoleExamples:
    """``n`` short pairs, then ``long_rejected`` pairs whose REJECTED answer is ~400 tokens
    (its chosen one is short: the pair's longer side decides)."""
    rows = [{"prompt": _messages("user", f"Is {i} + {i} = {2 * i}? Answer yes or no."),
             "chosen": _messages("assistant", "Yes: the sum is correct."),
             "rejected": _messages("assistant", f"No: it is {2 * i + 1}.")}
            for i in range(n)]
    rows += [{"prompt": _messages("user", "Is 1 + 1 = 2? Answer yes or no."),
              "chosen": _messages("assistant", "Yes."),
              "rejected": _messages("assistant", " ".join(str(k) for k in range(200)))}
             for _ in range(long_rejected)]
    return _examples(rows)


def _examples(rows: list[dict]) -> RoleExamples:
    return RoleExamples(pa.Table.from_pylist(rows), [0.5], ["arith.train.0000"], "test")


def _recipe(role: str, *, sft_max_length: int = 512, dpo_max_length: int = 512,
            sft_steps: int = 2, dpo_steps: int = 1) -> Recipe:
    recipe = load_recipe("cpu-smollm2")
    stages = recipe.role(role)
    roles = {**recipe.roles, role: RoleRecipe(
        sft=dataclasses.replace(stages.sft, max_steps=sft_steps, max_length=sft_max_length),
        dpo=dataclasses.replace(stages.dpo, max_steps=dpo_steps, max_length=dpo_max_length))}
    return dataclasses.replace(recipe, roles=roles)


def _tokenizer():
    from malt_lake.training.trainer import load_tokenizer

    return load_tokenizer(_source())


# -- 1. DPO trains on the SFT model's base: one base in memory ------------------------------
def test_dpo_trains_on_the_sft_models_own_base_and_its_reference_is_the_sft_adapter(
        tmp_path, monkeypatch):
    from malt_lake.training import trainer
    from malt_lake.training.role import _manifest, _train_stages

    loaded, policies = [], []
    real_load, real_dpo = trainer.load_base, trainer.train_dpo

    def counting_load(source, dtype):
        model, tokenizer = real_load(source, dtype)
        loaded.append(model)
        return model, tokenizer

    def watching_dpo(policy, *args, **kwargs):
        policies.append(policy)
        return real_dpo(policy, *args, **kwargs)

    monkeypatch.setattr(trainer, "load_base", counting_load)
    monkeypatch.setattr(trainer, "train_dpo", watching_dpo)
    sft_rows, dpo_rows = _sft_rows(5, long=1), _dpo_rows(4)
    short = max(sequence_lengths(_sft_rows(5).table, _tokenizer()))
    recipe = _recipe("verifier", sft_max_length=short + 8)
    build = tmp_path / "build"
    build.mkdir()
    stages = _train_stages(_source(), recipe, "verifier", sft_rows, dpo_rows, build,
                           log=lambda m: None)

    assert len(loaded) == 1  # the base weights were loaded once, for both stages
    (base,), (policy,) = loaded, policies
    assert policy.get_base_model() is base
    embed = base.get_input_embeddings().weight
    assert policy.get_base_model().get_input_embeddings().weight.data_ptr() == embed.data_ptr()
    sft, dpo = stages["sft"], stages["dpo"]
    assert (sft.rows, sft.dropped_too_long, sft.steps) == (5, 1, 2)
    assert (dpo.rows, dpo.dropped_too_long, dpo.steps) == (4, 0, 1)
    # policy and reference are both the SFT adapter before the first update: loss = ln 2
    assert dpo.loss_history[0][1] == pytest.approx(math.log(2), abs=1e-4)
    assert (build / "adapter_model.safetensors").is_file()
    assert (build / "stages" / "sft" / "adapter_model.safetensors").is_file()
    manifest = _manifest("embedded", recipe, "verifier", "v-test", "train", sft_rows, dpo_rows,
                         stages, 1.0)
    assert manifest["data"]["sft"]["rows"] == 6  # what the lake had
    assert manifest["stages"]["sft"]["dropped_too_long"] == 1  # what training left out
    assert manifest["stages"]["dpo"]["dropped_too_long"] == 0


# -- 2. Rows TRL would cut are dropped and counted --------------------------------------------
def test_rows_longer_than_max_length_are_dropped_and_counted():
    tokenizer = _tokenizer()
    sft = _sft_rows(3, long=2)
    lengths = sequence_lengths(sft.table, tokenizer)
    limit = max(lengths[:3])
    assert min(lengths[3:]) > limit + 100  # the long rows are far over, not at the edge
    kept, dropped = within_max_length(sft, tokenizer, limit)
    assert (kept.n_rows, dropped) == (3, 2)
    assert kept.table.column("completion").to_pylist() == sft.table.column(
        "completion").to_pylist()[:3]
    assert (kept.fingerprint, kept.thetas) == (sft.fingerprint, sft.thetas)
    # one token less and the longest short rows go too: the limit is inclusive, not rounded
    assert within_max_length(sft, tokenizer, limit - 1)[1] == 2 + lengths[:3].count(limit)

    dpo = _dpo_rows(2, long_rejected=1)  # chosen short, rejected long: the pair goes
    limit = max(sequence_lengths(_dpo_rows(2).table, tokenizer))
    kept, dropped = within_max_length(dpo, tokenizer, limit)
    assert (kept.n_rows, dropped) == (2, 1)
    assert StageResult("dpo", 2, 1, dropped_too_long=1).as_dict()["dropped_too_long"] == 1


def test_sft_whose_rows_all_exceed_max_length_is_skipped_before_loading_the_model(
        tmp_path, monkeypatch):
    from malt_lake.training import trainer
    from malt_lake.training.role import StageSkipped, _train_stages

    def no_load(source, dtype):
        raise AssertionError("the model must not be loaded for a skipped role")

    monkeypatch.setattr(trainer, "load_base", no_load)
    with pytest.raises(StageSkipped, match=r"sft_verifier has 0 rows within max_length 8 "
                                           r"tokens \(6 longer ones dropped"):
        _train_stages(_source(), _recipe("verifier", sft_max_length=8), "verifier",
                      _sft_rows(6), _dpo_rows(4), tmp_path, log=lambda m: None)


def test_dpo_whose_pairs_all_exceed_max_length_is_skipped_with_a_reason(tmp_path, monkeypatch):
    from peft import get_peft_model

    from malt_lake.training import trainer
    from malt_lake.training.role import _train_stages

    def untrained_sft(model, tokenizer, dataset, stage, lora, *args, **kwargs):
        return get_peft_model(model, trainer.lora_config(lora)), StageResult("sft", len(dataset),
                                                                             0)

    def no_dpo(*args, **kwargs):
        raise AssertionError("DPO must not train on no pairs")

    monkeypatch.setattr(trainer, "train_sft", untrained_sft)
    monkeypatch.setattr(trainer, "train_dpo", no_dpo)
    logs: list[str] = []
    stages = _train_stages(_source(), _recipe("refiner", dpo_max_length=8), "refiner",
                           _sft_rows(4), _dpo_rows(3), tmp_path, log=logs.append)
    assert stages["sft"].dropped_too_long == 0
    assert stages["dpo"].startswith("skipped: dpo_refiner has 0 pairs within max_length 8")
    assert "3 longer ones dropped" in stages["dpo"] and "raise roles.refiner.dpo.max_length" in \
        stages["dpo"]
    assert any("dropped 3 of 3 rows longer than max_length 8" in m for m in logs)
    assert (tmp_path / "adapter_model.safetensors").is_file()  # the SFT adapter is the result


# -- 3. A small LoRA delta survives on bf16 weights --------------------------------------------
def _prompt_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer.apply_chat_template(
        _messages("user", "What is 3 + 5?"), add_generation_prompt=True, tokenize=True,
        return_dict=False)])


def _small_delta_adapters(directory, ids: torch.Tensor) -> tuple[str, str]:
    """Two rank-1 LoRAs ("up", "down") on every targeted bf16 linear, adding +2^-13 or -2^-13
    to the weights of one output row, on the columns whose weight is at least 2^-4 in size,
    signed like that column's input on ``ids``: a quarter of a bf16 unit in the last place of
    every weight touched, so a merge rounds it all away (the merged weights are the base
    weights), yet that row's output moves by 2^-13 x the sum of hundreds of |inputs|."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_source(), dtype=torch.bfloat16).eval()
    inputs: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0][0].float()))
             for n, m in model.named_modules() if n.split(".")[-1] in TARGETS]
    with torch.inference_mode():
        model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    peft_model = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0,
                                                  target_modules=TARGETS))
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    deltas = [_small_delta(layer.get_base_layer().weight, inputs[layer.get_base_layer()])
              for layer in layers]
    paths = []
    for name, sign in (("up", 1.0), ("down", -1.0)):
        with torch.no_grad():
            for layer, (a, b) in zip(layers, deltas, strict=True):
                layer.lora_A["default"].weight.copy_(a[None, :])
                layer.lora_B["default"].weight.copy_(sign * b[:, None])
        peft_model.save_pretrained(directory / name)
        paths.append(str(directory / name))
    return paths[0], paths[1]


def _small_delta(weight: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A row, B column) of one layer's delta; ``x``: the layer's inputs (tokens, in)."""
    row = int((x @ weight.float().T).abs().mean(0).argmin())  # smallest outputs: finest ulp
    columns = weight[row].float().abs() >= 2.0 ** -4
    a = torch.where(columns, torch.sign(x.mean(0)), 0.0)
    b = torch.zeros(weight.shape[0])
    b[row] = 2.0 ** -13
    for sign in (1.0, -1.0):  # what merging into the bf16 weights gives: the base weights
        merged = (weight.float() + sign * b[:, None] * a[None, :]).to(torch.bfloat16)
        assert torch.equal(merged, weight)
    return a, b


def test_a_small_lora_delta_survives_inference_on_bf16_weights(tmp_path):
    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("embedded")  # bf16 weights by default
    assert backend.model.dtype == torch.bfloat16
    ids = _prompt_ids(backend.tokenizer)
    up, down = _small_delta_adapters(tmp_path, ids)

    def logits(adapter):
        backend._use_adapter(adapter)
        with torch.inference_mode():
            return backend.model(input_ids=ids).logits

    base = logits(None)
    tuned_up = logits(up)
    tuned_down = logits(down)
    assert not torch.equal(tuned_up, base)  # merged into bf16 weights, this delta vanished
    assert not torch.equal(tuned_down, base) and not torch.equal(tuned_down, tuned_up)
    assert torch.equal(logits(up), tuned_up)  # switching between adapters is exact
    assert torch.equal(logits(None), base)  # switching back restores the base exactly
    assert not backend.base_weights  # nothing merged, so no weights saved to restore

    params = SamplingParams(n=1, temperature=0.0, max_tokens=3)
    out = backend.generate([GenerationRequest("a", _messages("user", "Hi"), adapter=up),
                            GenerationRequest("b", _messages("user", "Hi"))], params)
    assert [len(c) for c in out] == [1, 1] and out[0][0].n_tokens >= 1
    assert torch.equal(logits(None), base)
