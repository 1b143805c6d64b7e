"""The real embedded model end to end at a tiny size, through Dagster materializations."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from assets.partitions import shard_partitions
from assets.resources import BackendResource
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from tests.resources import asset_resources

KEY = "arith.train.0000"


def test_real_model_expands_a_partition_and_credit_flows(lake, instance, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('[[datasets]]\nname = "arith"\nfamily = "numeric"\nshard_size = 2\n'
                      '[datasets.splits.train]\nkind = "arithmetic"\ncount = 2\n')
    resources = asset_resources(lake, config=config,
                                backend=BackendResource(kind="transformers", model="embedded"))
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert instance.get_dynamic_partitions(shard_partitions.name) == [KEY]
    role = {"n": 2, "max_tokens": 24, "temperature": 0.3}
    result = dg.materialize(
        ALL_ASSETS, instance=instance, resources=resources, partition_key=KEY,
        selection=["questions", "generations", "critiques", "refinements", "generation_rewards",
                   "leaf_rewards", "credit", "sft_generator", "sft_verifier", "sft_refiner",
                   "dpo_generator", "dpo_verifier", "dpo_refiner"],
        run_config={"ops": {a: {"config": role}
                            for a in ("generations", "critiques", "refinements")}})
    assert result.success
    counts = run_read_only(lake, """
        select (select count(*) from generations) g, (select count(*) from critiques) v,
               (select count(*) from refinements) r, (select count(*) from credit) c""")
    assert counts.to_pylist() == [{"g": 2 * 2, "v": 2 * 4, "r": 2 * 8, "c": 4 + 8 + 16}]
    refs = lake.read_required("refinements", PartitionKey.parse(KEY)).to_pylist()
    assert all(r["model"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct") for r in refs)
    assert all(r["text"] and r["n_tokens"] > 0 and r["error"] is None for r in refs)
    assert {r["max_tokens"] for r in refs} == {24} and {r["n_samples"] for r in refs} == {2}
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.check_name, c.passed) for c in checks]


def test_grouped_prefill_after_the_template_head_equals_each_prompt_alone(monkeypatch):
    """One role, as production sends it: the template head is prefilled once, then each
    group's part (three refinements of one answer), then each prompt's rest; in fp32 the
    next-token logits and greedy output equal those of each prompt alone."""
    import torch

    from malt_lake.backends import kv_cache
    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.transformers_backend import TransformersBackend
    from malt_lake.datasets.arithmetic import generate
    from malt_lake.prompts import template
    from malt_lake.settings import ArithmeticSource

    backend = TransformersBackend("embedded", dtype="float32", prefill_chunk_tokens=400)
    ref = template("numeric", "refiner")
    first, second = generate(ArithmeticSource(count=2, seed=9, max_steps=3))
    answer = "First add the numbers one by one, carefully. " * 6 + "Final Answer: 12"
    messages = [ref.render(first.question, answer=answer, critique=critique) for critique in
                ("Verdict: correct", "The sum is wrong. Verdict: incorrect", "Looks fine.")]
    messages.append(ref.render(second.question, answer="Final Answer: 3", critique="Wrong."))
    calls = []
    for name in ("repeat_rows", "select_rows"):
        real = getattr(kv_cache, name)
        monkeypatch.setattr(kv_cache, name, lambda cache, rows, room, name=name, real=real: (
            calls.append(name), real(cache, rows, room)))
    prompts = [backend._encode(m) for m in messages]
    with torch.inference_mode():
        logits, _, order = backend._prefill(prompts, kv_cache.reserved_cache(4))
        for prompt, row in zip([prompts[i] for i in order], logits, strict=True):
            alone = backend.model(input_ids=torch.tensor([prompt])).logits[0, -1]
            assert torch.allclose(row, alone, rtol=0, atol=1e-4), (row - alone).abs().max()
    # the head for the group's row, then the group's part for every prompt's row
    assert calls[:2] == ["repeat_rows", "select_rows"], calls
    requests = [GenerationRequest(f"r{i}", m) for i, m in enumerate(messages)]
    out = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=16))
    assert_each_equals_generate(backend, requests, out, 1, max_tokens=16)


def assert_each_equals_generate(backend, requests, out, n: int, max_tokens: int) -> None:
    """Every sample is Hugging Face greedy ``generate`` on its request's prompt alone."""
    tok = backend.tokenizer
    for request, samples in zip(requests, out, strict=True):
        ids = tok.apply_chat_template(request.messages, add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        ref = backend.model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        expected = tok.decode(ref[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert [s.text for s in samples] == [expected] * n, request.request_id
        assert all(s.n_prompt_tokens == ids["input_ids"].shape[1] for s in samples)


@pytest.mark.parametrize("n", [1, 2])
def test_fast_decoding_matches_hf_generate_greedy(n, monkeypatch):
    """Shared prefill (the template head once for the batch, each prompt once for its n
    samples), prefill in chunks of rows, the reserved KV cache and row compaction change
    nothing: in fp32 and greedy, every sample equals Hugging Face generate on the prompt
    alone. n = 1 prefills the batch in one forward, n = 2 one row per forward."""
    from malt_lake.backends import kv_cache
    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.transformers_backend import TransformersBackend
    from malt_lake.datasets.arithmetic import generate
    from malt_lake.prompts import template
    from malt_lake.settings import ArithmeticSource

    backend = TransformersBackend("embedded", dtype="float32",
                                  prefill_chunk_tokens=None if n == 1 else 1)
    tpl = template("numeric", "generator")
    problems = list(generate(ArithmeticSource(count=3, seed=3, max_steps=3)))
    requests = [GenerationRequest(f"q{p.index}", tpl.render(p.question)) for p in problems]
    repeated = []
    real_repeat_rows = kv_cache.repeat_rows
    monkeypatch.setattr(kv_cache, "repeat_rows", lambda cache, rows, room: (
        repeated.append((cache.get_seq_length(), rows)), real_repeat_rows(cache, rows, room)))
    out = backend.generate(requests, SamplingParams(n=n, temperature=0, max_tokens=32))
    assert repeated and all(head >= 16 and rows == 3 for head, rows in repeated), repeated
    assert_each_equals_generate(backend, requests, out, n, max_tokens=32)


@pytest.mark.parametrize("n", [1, 2])
def test_prompts_sharing_a_prefix_decode_as_each_prompt_alone(n, monkeypatch):
    """Critiques of several answers to one question, refinements of one answer with
    different critiques, a prompt on its own and generator prompts, in one batch: the
    grouped prefill (each group's shared part once, copied to its members' rows) changes
    nothing: in fp32, the prefill's logits and every greedy sample equal those of the prompt
    alone."""
    import torch

    from malt_lake.backends import kv_cache, prefix_groups
    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.transformers_backend import TransformersBackend
    from malt_lake.datasets.arithmetic import generate
    from malt_lake.prompts import template
    from malt_lake.settings import ArithmeticSource

    backend = TransformersBackend("embedded", dtype="float32", prefill_chunk_tokens=400)
    gen, ver, ref = (template("numeric", role) for role in ("generator", "verifier", "refiner"))
    first, second, third = generate(ArithmeticSource(count=3, seed=9, max_steps=3))
    answer = "First add the numbers. " * 3 + "Final Answer: 12"
    messages = [ver.render(first.question, answer=f"Step {i}: {i} + 1 = {i + 1}. " * (i + 1)
                           + "Final Answer: 7") for i in range(3)]
    messages += [ref.render(second.question, answer=answer, critique=critique) for critique in
                 ("Verdict: correct", "The sum is wrong. Verdict: incorrect")]
    messages += [gen.render(third.question), gen.render(first.question),
                 ver.render(third.question, answer="Final Answer: 3")]
    requests = [GenerationRequest(f"r{i}", m) for i, m in enumerate(messages)]
    planned, selected = [], []
    real_groups, real_select_rows = prefix_groups.prefix_groups, kv_cache.select_rows
    monkeypatch.setattr(prefix_groups, "prefix_groups", lambda rests: (
        planned.append(real_groups(rests)), planned[-1])[1])
    monkeypatch.setattr(kv_cache, "select_rows", lambda cache, index, room: (
        selected.append(index.tolist()), real_select_rows(cache, index, room)))
    out = backend.generate(requests, SamplingParams(n=n, temperature=0, max_tokens=24))
    # groups: the first question's critiques, the refinements of one answer, the generator
    # prompts (their template); the third question's critique on its own
    # once to order the batches, once in the one batch's prefill
    assert len(planned) == 2
    groups = planned[-1]
    sizes = sorted(groups.group_of.count(g) for g in range(len(groups.shared)))
    assert sizes == [2, 2, 3] and groups.group_of.count(-1) == 1, groups
    assert len(selected) == 1 and len(selected[0]) == len(requests)
    # the prefill's next-token logits equal each prompt's own forward pass
    prompts = [backend._encode(m) for m in messages]
    with torch.inference_mode():
        logits, _, order = backend._prefill(prompts, kv_cache.reserved_cache(4))
        assert sorted(order) == list(range(len(prompts)))
        for prompt, row in zip([prompts[i] for i in order], logits, strict=True):
            alone = backend.model(input_ids=torch.tensor([prompt])).logits[0, -1]
            assert torch.allclose(row, alone, rtol=0, atol=1e-4), (row - alone).abs().max()
    assert_each_equals_generate(backend, requests, out, n, max_tokens=24)


NEAR_TIE = 0.25


def test_fast_decoder_agrees_with_a_stock_model_in_bf16():
    """The custom decoder in bf16 (the default dtype), on a batch that mixes short generator
    and longer verifier prompts (so rows carry padding): at every position of its greedy
    output, its token is the stock transformers model's own greedy choice given the same
    prefix, or within 0.25 of it (one to four bf16 steps at these logits). Such near-ties
    are all the two ever disagree on here; exact agreement is checked in fp32 (above). A
    cache or mask bug picks tokens the stock model ranks clearly lower: ignoring the padding
    mask measured 0.96 mean and 0.80 min, writing each step over the previous position 0.91
    and 0.86."""
    import torch
    from transformers import AutoModelForCausalLM

    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.embedded import embedded_model_dir
    from malt_lake.backends.transformers_backend import TransformersBackend
    from malt_lake.datasets.arithmetic import generate
    from malt_lake.prompts import template
    from malt_lake.settings import ArithmeticSource

    # prefill chunks of two or three rows: a chunk's padding and cache rows must line up
    backend = TransformersBackend("embedded", dtype="bfloat16", prefill_chunk_tokens=300)
    assert backend.unsupported is None
    stock = AutoModelForCausalLM.from_pretrained(embedded_model_dir(),
                                                 dtype=torch.bfloat16).eval()
    gen, ver = template("numeric", "generator"), template("numeric", "verifier")
    requests = []
    for p in generate(ArithmeticSource(count=12, seed=5, max_steps=2)):
        if p.index % 2:
            requests.append(GenerationRequest(f"q{p.index}", gen.render(p.question)))
        else:
            answer = "Let me work it out step by step. " * (p.index % 5) + "Final Answer: 12"
            requests.append(GenerationRequest(f"v{p.index}",
                                              ver.render(p.question, None, answer=answer)))
    out = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=64))
    tok, rates = backend.tokenizer, []
    for request, [sample] in zip(requests, out, strict=True):
        prompt = backend._encode(request.messages)
        answer = tok(sample.text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = stock(input_ids=torch.tensor([prompt + answer])).logits[0]
        scores = logits[len(prompt) - 1:len(prompt) - 1 + len(answer)].float()
        ours = scores.gather(-1, torch.tensor(answer)[:, None]).squeeze(-1)
        # the stock model's best, or within 0.25 of it (one bf16 step for logits of 32 to
        # 64, two to four below)
        agrees = ours >= scores.max(-1).values - NEAR_TIE
        rates.append(agrees.float().mean().item() if answer else 1.0)
    assert sum(rates) / len(rates) >= 0.99 and min(rates) >= 0.97, rates


def _tiny(kind: str, vocab: int, bos: int, eos: int):
    from transformers import Gemma2Config, GPT2Config

    if kind == "gpt2":
        return GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, bos_token_id=bos,
                          eos_token_id=eos)
    return Gemma2Config(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=16, hidden_size=32, intermediate_size=64, vocab_size=vocab,
                        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)


@pytest.mark.parametrize("kind,attention", [("gpt2", "sdpa"), ("gemma2", "eager")])
def test_a_model_the_fast_decoder_does_not_support_decodes_with_generate(kind, attention,
                                                                         tmp_path, caplog):
    """Another architecture (tiny and random) is not run through the custom decoder: the
    backend says so and serves it with transformers' generate (eager attention where the model
    softcaps it: SDPA would leave that out), keeping the request contract (n samples, finish
    reasons, token counts, greedy = generate alone)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.embedded import embedded_model_dir
    from malt_lake.backends.transformers_backend import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_tiny(kind, len(tokenizer), tokenizer.bos_token_id,
                                                   tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    with caplog.at_level("WARNING"):
        backend = TransformersBackend(str(tmp_path / "tiny"), dtype="float32")
    assert f"architecture '{kind}' is not one the fast decoder supports" in caplog.text
    assert backend.model.config._attn_implementation == attention
    requests = [GenerationRequest(f"q{i}", [{"role": "user", "content": text}])
                for i, text in enumerate(["What is 2 + 3?", "Add 14 and 29, then double it.",
                                          "Hi"])]
    greedy = backend.generate(requests, SamplingParams(n=2, temperature=0, max_tokens=8))
    for request, samples in zip(requests, greedy, strict=True):
        ids = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        ref = backend.model.generate(**ids, max_new_tokens=8, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=backend.eos_ids)
        expected = tokenizer.decode(ref[0][ids["input_ids"].shape[1]:],
                                    skip_special_tokens=True)
        assert [s.text for s in samples] == [expected] * 2
        assert all(s.n_prompt_tokens == ids["input_ids"].shape[1] for s in samples)
    sampled = backend.generate(requests, SamplingParams(n=3, temperature=1.0, max_tokens=8))
    assert [len(s) for s in sampled] == [3, 3, 3]
    assert all(c.finish_reason in {"stop", "length"} and 0 <= c.n_tokens <= 8
               and (c.finish_reason == "stop" or c.n_tokens == 8)
               for samples in sampled for c in samples)


def test_a_lora_adapter_on_a_model_served_by_generate_changes_its_text_as_peft_does(tmp_path):
    """The generate fallback serves adapters too: a request's LoRA is in effect (greedy text
    equals peft's own generate with that adapter, and differs from the base model's), and a
    later request without one gets the base model back."""
    import copy

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from malt_lake.backends.base import GenerationRequest, SamplingParams
    from malt_lake.backends.embedded import embedded_model_dir
    from malt_lake.backends.transformers_backend import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_tiny("gpt2", len(tokenizer),
                                                   tokenizer.bos_token_id,
                                                   tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=4, lora_alpha=64, target_modules=["c_attn", "c_proj"], init_lora_weights=False,
        fan_in_fan_out=True))
    lora.save_pretrained(tmp_path / "adapter")
    backend = TransformersBackend(str(tmp_path / "tiny"), dtype="float32")
    assert backend.unsupported is not None
    messages = [{"role": "user", "content": "Add 14 and 29, then double it."}]
    greedy = SamplingParams(n=1, temperature=0, max_tokens=12)

    def text(adapter: str | None) -> str:
        [[sample]] = backend.generate([GenerationRequest("q", messages, adapter)], greedy)
        return sample.text

    base, adapted = text(None), text(str(tmp_path / "adapter"))
    reference = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "adapter").eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = reference.generate(**ids, max_new_tokens=12, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=backend.eos_ids)
    assert adapted == tokenizer.decode(out[0][ids["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
    assert adapted != base
    assert text(None) == base
