"""Which models the custom decoder (``kv_cache``, ``decode_attention``, ``sampling``) may serve.

It is written and tested for plain causal self-attention with rotary positions and grouped
key/value heads, every layer attending to the whole context. A model outside that (another
architecture, or one of these with sliding-window layers, logit softcapping or attention
sinks) would decode without the feature it ignores and write wrong text, so such a model is
refused here and served by transformers' own ``generate`` instead.
"""

from __future__ import annotations

from typing import Any

# model_type values whose attention the custom path implements (checked by tests on llama)
ALLOWED_ARCHITECTURES = frozenset({"llama", "qwen2", "qwen3"})
SINK_ATTRIBUTES = ("sinks", "attention_sinks", "use_sinks", "num_sink_tokens")


def unsupported_reason(config: Any) -> str | None:
    """Why the custom decoder must not serve a model with this config; None when it may."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ALLOWED_ARCHITECTURES:
        return (f"architecture {model_type!r} is not one the fast decoder supports "
                f"({', '.join(sorted(ALLOWED_ARCHITECTURES))})")
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or any(
            kind != "full_attention" for kind in layer_types):
        return "it has sliding-window attention layers"
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, name, None):
            return f"it uses {name}"
    if _has_sinks(config):
        return "it uses attention sinks"
    return None


def fallback_attention(config: Any) -> str | None:
    """The attention implementation for a model the custom decoder refuses: eager where the
    model has attention softcapping or sinks (transformers' SDPA path leaves softcapping
    out), else None, transformers' own default for that model class."""
    if getattr(config, "attn_logit_softcapping", None) or _has_sinks(config):
        return "eager"
    return None


def _has_sinks(config: Any) -> bool:
    """GPT-OSS has them by architecture; other configs name them in one of a few fields."""
    return getattr(config, "model_type", None) == "gpt_oss" or any(
        getattr(config, name, None) for name in SINK_ATTRIBUTES)
