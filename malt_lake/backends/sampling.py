"""Next-token sampling for the transformers backend.

Costs that dominated a 192-row decode step on a CPU in a profile, and what this module does
instead:
- ``torch.multinomial`` draws one exponential variate per vocabulary entry (as long as the
  model's forward pass). Inverse-CDF sampling draws one uniform per row and
  finds it in the cumulative weights: token ``i`` owns ``[cdf[i-1], cdf[i])``.
- Fresh 38 MB float tensors each step (``logits.float()``, softmax, cumsum) are mmapped and
  page-faulted anew every time. One workspace per batch, updated in place.
- ``exp`` of very negative numbers takes a slow underflow path (many times slower). Log
  weights are clamped at ``MIN_LOG_WEIGHT`` first and whatever sat at that floor is zeroed
  after, so a token less likely than e^-80 (~1.8e-35) times the top token is never drawn,
  far below what a float32 cumulative sum can resolve anyway.
- ``argmax`` over bf16 logits has no vectorized kernel on a CPU: several times slower than
  casting the row to float32 first (which is also what transformers' ``generate`` does).
- A top-p nucleus found by sorting the whole vocabulary costs as much as the forward pass.
  The nucleus is nearly always among the few most likely tokens: ``topk`` finds them, and
  only a row whose top ``k`` do not reach ``top_p`` makes ``k`` grow (to a sort of the
  whole vocabulary once ``k`` nears it, so a flat distribution costs little more than the
  sort it needs anyway).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from malt_lake.backends.base import BackendError, SamplingParams

MIN_LOG_WEIGHT = -80.0
_FLOOR = math.exp(MIN_LOG_WEIGHT)
# candidates a top-p draw looks at first; multiplied by NUCLEUS_GROWTH while some row's
# nucleus is wider, and the whole vocabulary once that would pass a quarter of it
NUCLEUS_CANDIDATES = 64
NUCLEUS_GROWTH = 16


class TokenSampler:
    """Picks the next token of every row of a decode batch; keeps its workspace across steps
    (rows only shrink as finished rows are dropped)."""

    def __init__(self, params: SamplingParams, generator: torch.Generator) -> None:
        self.params = params
        self.generator = generator
        self._workspace: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """One token id per row of ``logits`` (rows, vocab): greedy at temperature 0, else a
        draw from softmax(logits / temperature), within the top-p nucleus when top_p < 1."""
        if self.params.temperature == 0:
            return self._float32(logits).argmax(-1)
        weights = self._weights(logits)
        if self.params.top_p < 1.0:
            return _sample_nucleus(weights, self.params.top_p, self.generator)
        return sample_categorical(weights.cumsum_(-1), self.generator, cumulative=True)

    def _float32(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` copied into the float32 workspace."""
        rows, vocab = logits.shape
        space = self._workspace
        if space is None or space.shape[0] < rows or space.shape[1] != vocab:
            space = self._workspace = torch.empty((rows, vocab), dtype=torch.float32,
                                                  device=logits.device)
        return space[:rows].copy_(logits)

    def _weights(self, logits: torch.Tensor) -> torch.Tensor:
        """exp((logits - max) / temperature) in the workspace: unnormalized probabilities."""
        weights = self._float32(logits)
        weights.sub_(weights.amax(-1, keepdim=True)).mul_(1.0 / self.params.temperature)
        weights.clamp_(min=MIN_LOG_WEIGHT).exp_()
        return F.threshold_(weights, _FLOOR * (1 + 1e-6), 0.0)


def sample_categorical(weights: torch.Tensor, generator: torch.Generator,
                       cumulative: bool = False) -> torch.Tensor:
    """One index per row, drawn with probability proportional to the row's non-negative
    ``weights`` (they need not sum to 1; pass their running sums with ``cumulative``); an
    index of weight 0 is never drawn."""
    cdf = weights if cumulative else weights.cumsum(-1)
    total = cdf[:, -1:]
    if not bool((total > 0).all()):  # NaN or -inf scores everywhere: nothing to draw from
        bad = int((~(total > 0)).sum())
        raise BackendError(f"the model's next-token scores are not finite for {bad} of "
                           f"{total.shape[0]} rows; check the model weights and the adapter")
    uniform = torch.rand(total.shape, generator=generator, device=cdf.device,
                         dtype=cdf.dtype) * total
    # a draw that rounded up to the total goes to the last float below it
    uniform = torch.minimum(uniform, torch.nextafter(total, torch.zeros_like(total)))
    # first index whose cumulative weight exceeds the draw: a zero-weight index has the same
    # cdf as the one before it, so that earlier index is always found first
    return torch.searchsorted(cdf, uniform, right=True).squeeze(-1)


def _sample_nucleus(weights: torch.Tensor, top_p: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Draw among the most likely tokens whose probability mass reaches ``top_p``: a token
    is kept when the mass of the tokens ranked above it is at most ``top_p``."""
    total = weights.sum(-1, keepdim=True)
    vocab = weights.shape[-1]
    k = min(NUCLEUS_CANDIDATES, vocab)
    while True:
        # most likely first
        top_weights, top_ids = weights.topk(k, dim=-1) if k < vocab else \
            weights.sort(dim=-1, descending=True)
        running = top_weights.cumsum(-1)
        # the token ranked k+1 would have all of ``running[:, -1]`` above it: when that is
        # past top_p for every row, no row's nucleus reaches beyond these k
        if k == vocab or bool((running[:, -1:] > top_p * total).all()):
            break
        k = NUCLEUS_GROWTH * k if 4 * NUCLEUS_GROWTH * k <= vocab else vocab
    top_weights[(running - top_weights) > top_p * total] = 0
    picked = sample_categorical(top_weights, generator)
    return top_ids.gather(-1, picked[:, None]).squeeze(-1)
