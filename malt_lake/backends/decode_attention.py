"""Attention for decoding on a CPU: one query token per row, grouped-query heads unexpanded.

PyTorch's CPU flash-attention kernel spends ~15 ms a layer on a 96-row decode step of
SmolLM2 (q_len = 1, a padding mask), three quarters of the step. For one query token the work
is two small batched matmuls over the cache, which read each key/value head once instead of
repeating it for every query head. Prefill (q_len > 1) still goes to SDPA.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "malt_decode"


def decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None, **kwargs
                     ) -> tuple[torch.Tensor, None]:
    if query.shape[2] != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (B, KVH, G, L)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[-2]]               # (B, 1, 1, L)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)                                     # (B, KVH, G, D)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2), None


def register() -> str:
    """Make ``attn_implementation=NAME`` available; returns the name."""
    AttentionInterface.register(NAME, decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
