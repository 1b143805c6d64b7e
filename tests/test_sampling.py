"""The inverse-CDF sampler draws from the distribution it is given (and nothing else)."""

from __future__ import annotations

import pytest
import torch

from malt_lake.backends.base import BackendError, SamplingParams
from malt_lake.backends.sampling import (
    NUCLEUS_CANDIDATES,
    NUCLEUS_GROWTH,
    TokenSampler,
    _sample_nucleus,
    sample_categorical,
)

DRAWS = 200_000


def pick_next_tokens(logits: torch.Tensor, params: SamplingParams,
                     generator: torch.Generator) -> torch.Tensor:
    """A fresh sampler for one call."""
    return TokenSampler(params, generator)(logits)


def _frequencies(picked: torch.Tensor, size: int) -> torch.Tensor:
    return torch.bincount(picked, minlength=size).double() / picked.numel()


def test_draws_follow_the_weights_and_never_pick_a_zero_weight():
    weights = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0]) * 7  # unnormalized on purpose
    generator = torch.Generator().manual_seed(0)
    picked = sample_categorical(weights.expand(DRAWS, -1), generator)
    freq = _frequencies(picked, 6)
    assert freq[[0, 2, 5]].sum() == 0
    expected = (weights / weights.sum()).double()
    # 5 standard errors of a binomial proportion at 200k draws is < 0.0056
    assert torch.allclose(freq, expected, atol=0.0056)


def test_softmax_with_temperature_matches_multinomial_frequencies():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
    params = SamplingParams(n=1, temperature=0.7, seed=0)
    picked = pick_next_tokens(logits.expand(DRAWS, -1), params,
                              torch.Generator().manual_seed(1))
    expected = torch.softmax(logits[0] / 0.7, -1).double()
    assert torch.allclose(_frequencies(picked, 5), expected, atol=0.0056)


def test_top_p_keeps_the_nucleus_only():
    # sorted probabilities 0.5, 0.3, 0.15, 0.05: with top_p 0.7 the nucleus is {0.5, 0.3}
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    params = SamplingParams(n=1, temperature=1.0, top_p=0.7, seed=0)
    picked = pick_next_tokens(probs.log().expand(DRAWS, -1), params,
                              torch.Generator().manual_seed(2))
    freq = _frequencies(picked, 4)
    assert freq[0] == 0 and freq[2] == 0
    assert freq[1] == pytest.approx(0.5 / 0.8, abs=0.0056)


def test_rows_draw_independently_and_seeding_reproduces():
    logits = torch.zeros(4, 1000)
    params = SamplingParams(n=1, temperature=1.0, seed=0)
    first = pick_next_tokens(logits, params, torch.Generator().manual_seed(3))
    again = pick_next_tokens(logits, params, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert len(set(first.tolist())) > 1  # four uniform draws over 1000 tokens


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 2.0, 1.0], [3.0, 0.0, -1.0]])
    picked = pick_next_tokens(logits, SamplingParams(n=1, temperature=0.0), torch.Generator())
    assert picked.tolist() == [1, 0]


def test_negligible_and_banned_tokens_are_never_drawn():
    # relative probabilities e^-100 and 0 (-inf logit): far below float32 resolution
    logits = torch.tensor([[0.0, -100.0, float("-inf"), 0.0]])
    picked = pick_next_tokens(logits.expand(DRAWS, -1), SamplingParams(temperature=1.0),
                              torch.Generator().manual_seed(4))
    freq = _frequencies(picked, 4)
    assert freq[1] == 0 and freq[2] == 0
    assert freq[0] == pytest.approx(0.5, abs=0.0056)


def test_a_sampler_reused_as_rows_shrink_draws_like_a_fresh_one():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(5)).bfloat16()
    params = SamplingParams(temperature=0.5)
    reused = TokenSampler(params, torch.Generator().manual_seed(6))
    fresh_generator = torch.Generator().manual_seed(6)
    for rows in (6, 4, 1):
        assert torch.equal(reused(logits[:rows]),
                           pick_next_tokens(logits[:rows], params, fresh_generator))


def test_non_finite_scores_raise_a_clear_backend_error():
    logits = torch.tensor([[0.0, 1.0], [float("nan"), float("nan")]])
    with pytest.raises(BackendError, match="not finite for 1 of 2 rows"):
        pick_next_tokens(logits, SamplingParams(temperature=0.7), torch.Generator())


def _sorted_nucleus(weights: torch.Tensor, top_p: float,
                    generator: torch.Generator) -> torch.Tensor:
    """The definition, by sorting the whole vocabulary: a token is kept when the mass ranked
    above it is at most top_p."""
    sorted_weights, sorted_ids = weights.sort(dim=-1, descending=True)
    mass_before = (sorted_weights.cumsum(-1) - sorted_weights) / weights.sum(-1, keepdim=True)
    sorted_weights[mass_before > top_p] = 0
    picked = sample_categorical(sorted_weights, generator)
    return sorted_ids.gather(-1, picked[:, None]).squeeze(-1)


@pytest.mark.parametrize("widest,nucleus_sizes", [
    (6.0, (1, NUCLEUS_CANDIDATES)),                                   # the first candidates
    (3.0, (NUCLEUS_CANDIDATES, NUCLEUS_CANDIDATES * NUCLEUS_GROWTH)),  # one growth
    (0.3, (NUCLEUS_CANDIDATES * NUCLEUS_GROWTH, 5000)),               # the whole vocabulary
])
def test_top_p_draws_equal_the_sorted_vocabulary_definition(widest, nucleus_sizes):
    """Rows of very different widths in one batch (the widest decides how far the candidates
    grow), with the same generator: the same tokens as the sort-based definition."""
    scales = torch.tensor([8.0, 6.0, widest, 7.0])[:, None].repeat(16, 1)   # 64 rows
    logits = torch.randn(64, 5000, generator=torch.Generator().manual_seed(9)) * scales
    weights = torch.softmax(logits, -1)
    order = weights.sort(-1, descending=True).values
    widest_nucleus = int(((order.cumsum(-1) - order) <= 0.9 * order.sum(-1, keepdim=True))
                         .sum(-1).max())
    assert nucleus_sizes[0] <= widest_nucleus <= nucleus_sizes[1]
    for seed in range(5):
        ours = _sample_nucleus(weights.clone(), 0.9, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, _sorted_nucleus(weights.clone(), 0.9,
                                                 torch.Generator().manual_seed(seed)))


def test_top_p_nucleus_wider_than_the_first_candidates_is_kept_whole():
    # 400 tokens of slowly falling probability: the 0.9 nucleus holds hundreds of them, far
    # more than the sampler's first top-k candidates, beside rows whose nucleus is one token
    logits = -torch.arange(400, dtype=torch.float32) / 150
    probs = torch.softmax(logits, -1).double()
    order = probs.argsort(descending=True)
    kept = order[(probs[order].cumsum(0) - probs[order]) <= 0.9]
    assert len(kept) > 4 * NUCLEUS_CANDIDATES
    narrow = logits.clone()
    narrow[5] = 30.0
    batch = torch.stack([logits, narrow]).repeat(DRAWS // 2, 1)   # wide, narrow, wide, ...
    params = SamplingParams(n=1, temperature=1.0, top_p=0.9, seed=0)
    picked = pick_next_tokens(batch, params, torch.Generator().manual_seed(8))
    assert set(picked[1::2].tolist()) == {5}
    wide = picked[0::2]
    assert set(wide.unique().tolist()) == set(kept.tolist())
    freq = _frequencies(wide, 400)
    expected = torch.zeros(400, dtype=torch.float64)
    expected[kept] = probs[kept] / probs[kept].sum()
    assert torch.allclose(freq, expected, atol=0.0056)
    # the first tenth of the nucleus carries its share of the draws
    head = kept[: len(kept) // 10]
    assert float(freq[head].sum()) == pytest.approx(float(expected[head].sum()), abs=0.01)


def test_greedy_on_bf16_logits_takes_the_first_of_equal_maxima():
    logits = torch.tensor([[0.5, 2.0, 2.0, 1.0], [3.0, 3.0, 0.0, -1.0]]).bfloat16()
    picked = pick_next_tokens(logits, SamplingParams(n=1, temperature=0.0), torch.Generator())
    assert picked.tolist() == [1, 0]
