"""The shared-prefix KV cache and its attention equal plain attention over copied prompts."""

from __future__ import annotations

import pytest
import torch

from malt_lake.backends.decode_attention import decode_attention
from malt_lake.backends.kv_cache import SharedPrefix, reserved_cache, share_prefix

PROMPTS, N, KV_HEADS, GROUP, DIM = 3, 3, 2, 3, 8


MODULE = torch.nn.Module().eval()  # what attention receives as ``module`` at inference


def _padding_mask(lengths: list[int], width: int, extra: int) -> torch.Tensor:
    rows = [[False] * (width - n) + [True] * (n + extra) for n in lengths]
    return torch.tensor(rows)[:, None, None, :]


def _steps(cache, prefix_k, prefix_v, lengths, rows_alive, steps, generator):
    """Decode ``steps`` tokens; returns (shared-path outputs, reference outputs) per step."""
    width = prefix_k.shape[2]
    full_k = prefix_k.repeat_interleave(N, dim=0)
    full_v = prefix_v.repeat_interleave(N, dim=0)
    row_lengths = [n for n in lengths for _ in range(N)]
    outputs = []
    for step in range(steps):
        alive = rows_alive(step)
        if alive is not None:
            cache.batch_select_indices(alive)
            full_k, full_v = full_k[alive], full_v[alive]
            row_lengths = [row_lengths[i] for i in alive.tolist()]
        rows = full_k.shape[0]
        query = torch.randn(rows, KV_HEADS * GROUP, 1, DIM, generator=generator)
        new_k = torch.randn(rows, KV_HEADS, 1, DIM, generator=generator)
        new_v = torch.randn(rows, KV_HEADS, 1, DIM, generator=generator)
        key, value = cache.update(new_k, new_v, 0)
        assert isinstance(key, SharedPrefix)
        full_k, full_v = torch.cat([full_k, new_k], 2), torch.cat([full_v, new_v], 2)
        mask = _padding_mask(row_lengths, width, step + 1)
        got, _ = decode_attention(MODULE, query, key, value, mask)
        want, _ = decode_attention(MODULE, query, full_k, full_v, mask)
        outputs.append((got, want))
    return outputs


def test_shared_prefix_attention_equals_copied_prompts_through_compaction():
    generator = torch.Generator().manual_seed(0)
    width, lengths = 7, [7, 4, 5]  # left-padded prompts of different lengths
    prefix_k = torch.randn(PROMPTS, KV_HEADS, width, DIM, generator=generator)
    prefix_v = torch.randn(PROMPTS, KV_HEADS, width, DIM, generator=generator)
    cache = reserved_cache(reserve=2)  # small: the suffix buffer has to grow
    cache.update(prefix_k, prefix_v, 0)
    share_prefix(cache, N)
    assert cache.get_seq_length() == width

    def alive(step: int):
        if step == 2:   # one sample of prompt 0 and one of prompt 2 finish
            return torch.tensor([1, 2, 3, 4, 5, 6, 7])
        if step == 4:   # prompt 1 finishes entirely: its prefix must go, the rest remap
            return torch.tensor([0, 1, 5, 6])
        return None

    for got, want in _steps(cache, prefix_k, prefix_v, lengths, alive, 6, generator):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    layer = cache.layers[0]
    assert layer._prefix[0].shape[0] == 2           # prompt 1's prefix was dropped
    assert layer.slots.tolist() == [1, 2, 3, 4]     # prompt 0 samples 1, 2; prompt 2 → 1
    assert cache.get_seq_length() == width + 6


def test_share_prefix_runs_once_right_after_the_prefill():
    cache = reserved_cache(reserve=4)
    cache.update(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4), 0)
    share_prefix(cache, 2)
    with pytest.raises(RuntimeError, match="once"):
        share_prefix(cache, 2)


def test_step_bias_is_reused_only_for_the_same_mask():
    """Layers of one step share the mask object and its bias; another mask of the same shape
    (the next step after a compaction, say) or no mask gets its own."""
    generator = torch.Generator().manual_seed(1)
    width, lengths = 5, [5, 3, 4]
    prefix_k = torch.randn(PROMPTS, KV_HEADS, width, DIM, generator=generator)
    prefix_v = torch.randn(PROMPTS, KV_HEADS, width, DIM, generator=generator)
    cache = reserved_cache(reserve=4)
    cache.update(prefix_k, prefix_v, 0)
    share_prefix(cache, N)
    new_k = torch.randn(PROMPTS * N, KV_HEADS, 1, DIM, generator=generator)
    key, value = cache.update(new_k, new_k.clone(), 0)
    full_k = torch.cat([prefix_k.repeat_interleave(N, dim=0), new_k], 2)
    full_v = torch.cat([prefix_v.repeat_interleave(N, dim=0), new_k], 2)
    query = torch.randn(PROMPTS * N, KV_HEADS * GROUP, 1, DIM, generator=generator)
    padded = _padding_mask([n for n in lengths for _ in range(N)], width, 1)
    unpadded = torch.ones_like(padded)

    def check(mask):
        got, _ = decode_attention(MODULE, query, key, value, mask)
        want, _ = decode_attention(MODULE, query, full_k, full_v, mask)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    for mask in [padded, padded, unpadded, None, padded]:
        check(mask)
    check(padded.clone())  # a mask that is gone by the next call: no mask must not reuse it
    check(None)
