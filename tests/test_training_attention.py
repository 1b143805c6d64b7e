"""CPU training attention: eager for short batches, SDPA for long ones, the same numbers as
transformers' SDPA attention either way."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

from malt_lake.training import attention
from malt_lake.training.attention import NAME, training_attention


def _tiny_llama(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         hidden_size=32, intermediate_size=64, vocab_size=97,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).float().train()


@pytest.mark.parametrize("length,branch", [(12, "eager"), (24, "sdpa")])
@pytest.mark.parametrize("padding", ["right", "left", "none"])
def test_each_branch_gives_sdpas_loss_and_gradients(length, branch, padding, monkeypatch):
    monkeypatch.setattr(attention, "EAGER_UP_TO", 16)
    calls = []
    for name in ("eager_attention_forward", "sdpa_attention_forward"):
        real = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _real=real, _name=name, **k: (
            calls.append(_name.split("_")[0]), _real(*a, **k))[1])
    assert training_attention(_tiny_llama("sdpa").config) == NAME
    ours, reference = _tiny_llama(NAME), _tiny_llama("sdpa")
    reference.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 97, (3, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, length, dtype=torch.long)
    if padding == "right":
        mask[1, -5:] = 0
    elif padding == "left":
        mask[2, :4] = 0
    labels = ids.masked_fill(mask == 0, -100)
    # a left-padded row's first token is predicted from a padding position, which attends
    # to nothing: each implementation fills that row its own way, and no trainer scores it
    labels[:, 1:].masked_fill_(mask[:, :-1] == 0, -100)
    results = []
    for model in (ours, reference):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert set(calls) == {branch} and len(calls) == 2  # one call per layer, ours only
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-5), name


def test_only_supported_architectures_on_a_cpu_get_it(monkeypatch):
    llama = _tiny_llama("sdpa").config
    assert training_attention(llama) == NAME
    assert training_attention(GPT2Config(n_layer=1, n_head=2, n_embd=8)) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_attention(llama) is None


def test_the_embedded_base_loads_for_training_with_it():
    from malt_lake.backends.embedded import embedded_model_dir
    from malt_lake.training.trainer import load_base

    model, _ = load_base(embedded_model_dir(), "bfloat16")
    assert model.config._attn_implementation == NAME


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_generation_with_a_cache_matches_sdpa(cache):
    """A model loaded for training may still be asked to generate: the prefill into an empty
    static cache (no mask from ``sdpa_mask``, more key slots than queries) and one-token
    steps must attend as SDPA does."""
    ours, reference = _tiny_llama(NAME).eval(), _tiny_llama("sdpa").eval()
    assert training_attention(ours.config) == NAME
    reference.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(2))
    outs = [model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                           do_sample=False, cache_implementation=cache, output_scores=True,
                           return_dict_in_generate=True, pad_token_id=0)
            for model in (ours, reference)]
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for a, b in zip(outs[0].scores, outs[1].scores, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
