"""One generation protocol for every backend: chat requests in, n completions each out."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from malt_lake.errors import MaltLakeError

Message = dict[str, str]


class BackendError(MaltLakeError):
    """The backend could not serve a whole batch (server down, model missing...)."""


@dataclass(frozen=True)
class SamplingParams:
    n: int = 3
    temperature: float = 0.3
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    # regular expressions that end a completion: its text is kept up to the end of the
    # earliest match (the role's answer line, e.g. "Final Answer: 7\n"), finish_reason "stop"
    stop: tuple[str, ...] = ()
    # end a completion that has fallen into a loop (``looping``) as if it had hit its budget
    # (finish_reason "length"): the fast decoder's saving on small models that repeat a line
    # until the budget; other backends decode such rows to the budget
    cut_loops: bool = False

    def __post_init__(self) -> None:
        check_stop_patterns(self.stop)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    messages: list[Message]
    adapter: str | None = None  # LoRA adapter directory; None = the base model
    # this request's own sampling seed (see ``request_seed``); None = ``SamplingParams.seed``
    seed: int | None = None

    def seed_or(self, params: SamplingParams) -> int:
        return params.seed if self.seed is None else self.seed


# JSON-safe (servers parse the seed as a number) and still far too large to collide by chance
SEED_BITS = 53


def request_seed(run_seed: int, *parts: str | int) -> int:
    """The sampling seed of one request, derived from the run's seed and what the request is
    (role, question or parent id, chain). vLLM and OpenAI-compatible servers draw each request
    from its seed alone, so two requests with one seed and one prompt return the same text:
    every request that should be an independent sample needs a seed of its own. With n > 1 a
    server may seed sample i with seed + i; hashed seeds keep those ranges apart too."""
    key = "|".join(str(p) for p in (run_seed, *parts))
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << SEED_BITS) - 1)


@dataclass(frozen=True)
class Completion:
    text: str | None
    n_prompt_tokens: int
    n_tokens: int
    finish_reason: str | None  # "stop" | "length" | None on failure
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Completion:
        return cls(None, 0, 0, None, error)


def check_stop_patterns(stop: Sequence[str]) -> None:
    """Refuse a stop pattern that is not a regular expression (ValueError naming it)."""
    for pattern in stop:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"stop pattern {pattern!r} is not a regular expression: "
                             f"{exc}") from None


def stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where ``text`` ends by the earliest match of a stop pattern; None when none matches."""
    ends = [m.end() for pattern in stop if (m := re.search(pattern, text))]
    return min(ends) if ends else None


def cut_at_stop(completion: Completion, stop: Sequence[str]) -> Completion:
    """``completion`` ended at its first stop match: how a backend without regex stops (vLLM
    and OpenAI servers take literal strings only) gives the same text as one that stops
    early. Tokens past the match were still decoded and stay counted in ``n_tokens``."""
    end = stop_index(completion.text, stop) if completion.text and stop else None
    if end is None:
        return completion
    return replace(completion, text=completion.text[:end], finish_reason="stop")


# A completion loops when the last LOOP_WINDOWS[i] tokens, for any i, hold at most half as
# many distinct LOOP_GRAM-grams as a text without repeats would: a line or sentence said over
# and over (the longer window catches lines longer than half the shorter one).
LOOP_WINDOWS = (64, 128)
LOOP_GRAM = 4


def looping(tokens: Sequence[int]) -> bool:
    """Whether the completion so far ends in a loop (its last 64 or 128 tokens are at least
    half repeated ``LOOP_GRAM``-grams). A looping text rarely leaves its loop before the
    budget; the few that do had said the same line three or four times first."""
    for window in LOOP_WINDOWS:
        if len(tokens) < window:
            return False
        tail = tokens[-window:]
        spans = window - LOOP_GRAM + 1
        if 2 * len({tuple(tail[i:i + LOOP_GRAM]) for i in range(spans)}) <= spans:
            return True
    return False


class Backend(Protocol):
    """Generates ``params.n`` completions for every request, in request order."""

    model_id: str

    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]: ...

    def close(self) -> None: ...
