"""Which models the custom decoder serves (``decoder_support``): configs only, no weights."""

from __future__ import annotations

import pytest
from transformers import Gemma2Config, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from malt_lake.backends.decoder_support import unsupported_reason


def test_plain_causal_attention_models_are_served():
    assert unsupported_reason(LlamaConfig()) is None
    assert unsupported_reason(Qwen2Config()) is None  # sliding window off by default


@pytest.mark.parametrize("config,needle", [
    (GPT2Config(), "architecture 'gpt2'"),
    (MistralConfig(sliding_window=4096), "architecture 'mistral'"),
    (Gemma2Config(), "architecture 'gemma2'"),
    (Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=0),
     "sliding-window"),
])
def test_models_with_features_it_ignores_are_refused(config, needle):
    reason = unsupported_reason(config)
    assert reason is not None and needle in reason, reason


def test_softcapping_and_sinks_are_refused_even_on_an_allowed_architecture():
    capped = LlamaConfig()
    capped.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in unsupported_reason(capped)
    sinks = LlamaConfig()
    sinks.use_sinks = True
    assert "attention sinks" in unsupported_reason(sinks)
