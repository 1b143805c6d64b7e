"""Attention for decoding on a CPU: one query token per row, grouped-query heads unexpanded.

PyTorch's CPU flash-attention kernel takes most of a many-row decode step of SmolLM2
(q_len = 1, a padding mask) in a profile. For one query token the work
is two small batched matmuls over the cache, which read each key/value head once instead of
repeating it for every query head. Prefill (q_len > 1) still goes to SDPA.

When the cache hands ``SharedPrefix`` keys and values (the n samples of a prompt sharing its
cache), the prompt part is attended per prompt with all its samples' queries stacked, the
generated part per row, and one softmax spans both.
"""

from __future__ import annotations

import weakref

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from malt_lake.backends.kv_cache import SharedPrefix

NAME = "malt_decode"
# attention arguments some architectures pass that this implementation would silently ignore
IGNORED_FEATURES = ("sliding_window", "softcap", "s_aux")


def decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None, **kwargs
                     ) -> tuple[torch.Tensor, None]:
    ignored = [name for name in IGNORED_FEATURES if kwargs.get(name) is not None]
    if ignored:  # decoder_support should have kept this model away; never decode it wrong
        raise RuntimeError(f"malt_decode attention does not implement {', '.join(ignored)}")
    if isinstance(key, SharedPrefix):
        if query.shape[2] != 1 or module.training:
            raise RuntimeError("a shared-prefix cache only serves one-token decode steps")
        return _shared_prefix_attention(query, key, value, attention_mask, scaling)
    if query.shape[2] != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = _masked(torch.matmul(q, key.transpose(-1, -2)).float() * _scale(scaling, dim),
                     attention_mask)                                     # (B, KVH, G, L)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)                                     # (B, KVH, G, D)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2), None


def _shared_prefix_attention(query: torch.Tensor, key: SharedPrefix, value: SharedPrefix,
                             attention_mask: torch.Tensor | None, scaling: float | None
                             ) -> tuple[torch.Tensor, None]:
    batch, heads, _, dim = query.shape
    _, kv_heads, prefix_len, _ = key.prefix.shape
    group = heads // kv_heads
    q = query.reshape(batch, kv_heads, group, dim)
    # prompt part: each prompt's samples' queries side by side, one matmul per prompt
    stacked = _to_prompts(q, key)                                        # (P, KVH, n*G, D)
    prefix_scores = torch.matmul(stacked, key.prefix.transpose(-1, -2))  # (P, KVH, n*G, Lp)
    suffix_scores = torch.matmul(q, key.suffix.transpose(-1, -2))        # (B, KVH, G, cap)
    capacity = suffix_scores.shape[-1]
    scores = torch.empty((batch, kv_heads, group, prefix_len + capacity),
                         dtype=torch.float32, device=query.device)
    _to_rows(prefix_scores, key, out=scores[..., :prefix_len])
    scores[..., prefix_len:] = suffix_scores
    # scale, then -inf at padding and at the unfilled tail of the suffix buffer: one pass
    # with a bias built once per decode step (every layer gets the same mask)
    scores.mul_(_scale(scaling, dim)).add_(_step_bias(attention_mask, batch, prefix_len,
                                                      key.length, capacity, query.device))
    probs = torch.softmax(scores, dim=-1)
    # the two parts go to bf16 as separate contiguous tensors: a batched matmul would copy
    # a slice of one whole tensor (rows spaced wider than their length) anyway
    suffix_probs = probs[..., prefix_len:].to(value.suffix.dtype)
    out = torch.matmul(suffix_probs, value.suffix)                       # (B, KVH, G, D)
    prefix_out = torch.matmul(_to_prompts(probs[..., :prefix_len], key, value.prefix.dtype),
                              value.prefix)                              # (P, KVH, n*G, D)
    _add_rows(prefix_out, key, out)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2), None


# the additive mask of the current decode step: built by the first layer, reused by the
# others, which get the same mask object; (weak ref to that mask or None, shape, bias)
_step_bias_memo: tuple[weakref.ref | None, tuple, torch.Tensor] | None = None


def _step_bias(attention_mask: torch.Tensor | None, batch: int, prefix_len: int,
               length: int, capacity: int, device: torch.device) -> torch.Tensor:
    """(B, 1, 1, Lp + capacity): 0 where a row attends, -inf at its padding and at the
    suffix buffer's positions past ``length``."""
    global _step_bias_memo
    shape = (batch, prefix_len, length, capacity, device)
    memo = _step_bias_memo
    if memo is not None and memo[1] == shape:
        ref = memo[0]
        if (attention_mask is None and ref is None) or (
                attention_mask is not None and ref is not None and ref() is attention_mask):
            return memo[2]
    bias = torch.zeros((batch, 1, 1, prefix_len + capacity), dtype=torch.float32,
                       device=device)
    bias[..., prefix_len + length:] = float("-inf")
    _masked(bias[..., :prefix_len + length], attention_mask, in_place=True)
    ref = weakref.ref(attention_mask) if attention_mask is not None else None
    _step_bias_memo = (ref, shape, bias)
    return bias


def _to_prompts(rows: torch.Tensor, key: SharedPrefix,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, KVH, G, X) per row → (P, KVH, n*G, X) per prompt, in ``dtype`` (finished samples'
    slots are zeros, and only ever reach their own output rows, which ``_to_rows`` drops)."""
    _, kv_heads, group, width = rows.shape
    prompts, n = key.prefix.shape[0], key.n
    dtype = dtype or rows.dtype
    if key.complete:
        grid = rows.new_empty((prompts, kv_heads, n, group, width), dtype=dtype)
        grid.transpose(1, 2).copy_(rows.view(prompts, n, kv_heads, group, width))
    else:
        grid = rows.new_zeros((prompts, kv_heads, n, group, width), dtype=dtype)
        grid.transpose(1, 2)[key.prompt_of, key.sample_of] = rows.to(dtype)
    return grid.view(prompts, kv_heads, n * group, width)


def _to_rows(stacked: torch.Tensor, key: SharedPrefix,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of ``_to_prompts``: (P, KVH, n*G, X) → (B, KVH, G, X) for the live rows,
    into ``out`` when given."""
    prompts, kv_heads, stacked_group, width = stacked.shape
    n, group = key.n, stacked_group // key.n
    per_sample = stacked.view(prompts, kv_heads, n, group, width).transpose(1, 2)
    if not key.complete:
        rows = per_sample[key.prompt_of, key.sample_of]                  # a gather: a copy
        return rows if out is None else out.copy_(rows)
    if out is None:
        out = stacked.new_empty((prompts * n, kv_heads, group, width))
    out.view(prompts, n, kv_heads, group, width).copy_(per_sample)
    return out


def _add_rows(stacked: torch.Tensor, key: SharedPrefix, out: torch.Tensor) -> None:
    """``out += _to_rows(stacked)`` without the intermediate copy when every row is live."""
    if not key.complete:
        out += _to_rows(stacked, key)
        return
    prompts, kv_heads, stacked_group, width = stacked.shape
    n, group = key.n, stacked_group // key.n
    per_sample = stacked.view(prompts, kv_heads, n, group, width).transpose(1, 2)
    out.view(prompts, n, kv_heads, group, width).add_(per_sample)


def _masked(scores: torch.Tensor, attention_mask: torch.Tensor | None,
            in_place: bool = False) -> torch.Tensor:
    if attention_mask is None:
        return scores
    mask = attention_mask[:, :, -1:, : scores.shape[-1]]                 # (B, 1, 1, L)
    if mask.dtype == torch.bool:
        return (scores.masked_fill_ if in_place else scores.masked_fill)(~mask, float("-inf"))
    return scores.add_(mask.float()) if in_place else scores + mask.float()


def _scale(scaling: float | None, dim: int) -> float:
    return scaling if scaling is not None else dim ** -0.5


def register() -> str:
    """Make ``attn_implementation=NAME`` available; returns the name."""
    AttentionInterface.register(NAME, decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
