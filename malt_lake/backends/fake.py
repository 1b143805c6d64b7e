"""A deterministic, instant backend for plumbing tests. Never a stand-in for the feature."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from malt_lake.backends.base import Completion, GenerationRequest, SamplingParams, cut_at_stop


class FakeBackend:
    """Answers with a number drawn from a hash of (request, sample): same input, same output."""

    model_id = "fake-deterministic"

    def __init__(self, delay_s: float = 0.0, fail_every: int = 0) -> None:
        self.delay_s = delay_s
        self.fail_every = fail_every
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return [[cut_at_stop(self._one(r, i, params), params.stop) for i in range(params.n)]
                for r in requests]

    def _one(self, request: GenerationRequest, index: int, params: SamplingParams) -> Completion:
        # the adapter by its version name, not its path: where the lake lives must not change
        # what a deterministic backend answers
        adapter = Path(request.adapter).name if request.adapter else None
        digest = hashlib.sha256(
            f"{request.request_id}|{index}|{request.seed_or(params)}|{adapter}".encode()).digest()
        if self.fail_every and digest[0] % self.fail_every == 0:
            return Completion.failed("fake backend: injected failure")
        number = digest[1] % 20
        role = request.messages[-1]["content"]
        if "Reviewer feedback" in role or "Proposed" not in role:
            text = f"Step 1: think. Final Answer: {number}"
        else:
            text = f"Step 1 looks {'right' if digest[2] % 2 else 'wrong'}. Verdict: " \
                   f"{'correct' if digest[2] % 2 else 'incorrect'}"
        return Completion(text, len(request.messages[-1]["content"]) // 4, 12, "stop")

    def close(self) -> None:
        pass
