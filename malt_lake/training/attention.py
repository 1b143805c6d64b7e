"""Attention for training on a CPU: transformers' eager attention for short batches, SDPA for
long ones.

PyTorch's CPU flash-attention kernel (SDPA), its backward above all, is slower than eager
attention's plain matmuls and softmax on short rows, and faster past a few hundred tokens,
where eager's (batch, heads, length, length) score matrices outgrow the caches and are kept
for the backward at every layer (a SmolLM2-135M forward and backward of 4 padded rows, bf16
autocast: eager 0.40 vs 0.56 s at 128 tokens, 1.99 vs 2.26 s at 448, 3.56 vs 2.87 s at 512;
README, Benchmarks). Each call goes to the faster of the two by its key length; both are
transformers' own functions, fed the same mask.

Only the architectures the fast decoder is written for take it (``decoder_support``: plain
causal self-attention, rotary positions, no sliding window, softcapping or sinks), where
transformers' eager function is the one below; another model keeps its default attention.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

NAME = "malt_train"
# longest key length (padded row) that goes to eager attention
EAGER_UP_TO = 448


def length_dispatched_attention(module: torch.nn.Module, query: torch.Tensor,
                                key: torch.Tensor, value: torch.Tensor,
                                attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                scaling: float | None = None, **kwargs
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    if key.shape[-2] > EAGER_UP_TO or kwargs.get("sliding_window") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    causal = kwargs.get("is_causal")
    mask = additive_mask(attention_mask, query.shape[-2], key.shape[-2],
                         getattr(module, "is_causal", True) if causal is None else causal,
                         query.dtype, query.device)
    return eager_attention_forward(module, query, key, value, mask, dropout=dropout,
                                   scaling=scaling if scaling is not None
                                   else query.shape[-1] ** -0.5, **kwargs)


def additive_mask(mask: torch.Tensor | None, q_len: int, k_len: int, causal: bool,
                  dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """What SDPA would attend to, as the additive mask eager attention adds to its scores.

    ``sdpa_mask`` gives a (B or 1, 1, q, k) boolean (True: attend), made here 0 there and
    the dtype's lowest value elsewhere (a row masked everywhere gets even weights, not NaN,
    as with transformers' own eager mask); a float mask is already additive. None means
    what SDPA does with no mask: every key for one query or a non-causal module, else its
    ``is_causal`` pattern, aligned to the first key (query i sees keys 0..i: a prefill into
    an empty static cache, whose later slots are still empty)."""
    if mask is None:
        if q_len == 1 or not causal:
            return None
        mask = torch.ones((q_len, k_len), dtype=torch.bool, device=device).tril()[None, None]
    mask = mask[..., :k_len]
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(
        ~mask, torch.finfo(dtype).min)


def training_attention(config) -> str | None:
    """The ``attn_implementation`` to load a model with for CPU training: ``NAME`` for the
    architectures it is written for, None (transformers' default) for any other model or
    when a GPU will run it."""
    from malt_lake.backends.decoder_support import unsupported_reason

    if torch.cuda.is_available() or unsupported_reason(config) is not None:
        return None
    AttentionInterface.register(NAME, length_dispatched_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
