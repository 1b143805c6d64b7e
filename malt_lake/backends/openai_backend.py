"""Any OpenAI-compatible chat server (``vllm serve``, ``transformers serve``, llama.cpp
server, a hosted API), through the ``openai`` client package.

The client retries transient errors (408, 409, 429, 5xx, connection errors, timeouts) with
backoff; requests run with bounded concurrency. A request that still fails is a recorded
failure for its n samples; a batch in which every request fails raises, so the run stops and
can resume later. A server that ignores ``n`` (``transformers serve`` answers one choice) is
asked again for the missing samples, one request each with the next seed, so every parent
still gets n samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import openai

from malt_lake.backends.base import (
    BackendError,
    Completion,
    GenerationRequest,
    SamplingParams,
    cut_at_stop,
)


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 4, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        # the client insists on a key; servers without auth ignore the header
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "unused",
                                    max_retries=max_retries, timeout=timeout_s)

    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            results = list(pool.map(lambda r: self._samples(r, params), requests))
        if results and all(c.error for cs in results for c in cs):
            raise BackendError(f"every request to {self.base_url} failed; first error: "
                               f"{results[0][0].error}")
        return results

    def _samples(self, request: GenerationRequest, params: SamplingParams) -> list[Completion]:
        """The request's n samples; a failed call fails the samples it still owed."""
        seed = request.seed_or(params)
        samples: list[Completion] = []
        try:
            while len(samples) < params.n:
                more = self._ask(request, params, params.n - len(samples), seed + len(samples))
                if not more:
                    raise ValueError("the server returned no choices")
                samples += more
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {str(exc.body or exc.message)[:200]}"
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        except (openai.APIResponseValidationError, ValueError, KeyError, TypeError,
                AttributeError) as exc:
            error = f"malformed response: {exc}"
        else:
            return samples
        return samples + [Completion.failed(error) for _ in range(params.n - len(samples))]

    def _ask(self, request: GenerationRequest, params: SamplingParams, n: int,
             seed: int) -> list[Completion]:
        response = self.client.chat.completions.create(
            model=request.adapter or self.model_id, messages=request.messages, n=n,
            temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
            seed=seed)
        choices = sorted(response.choices, key=lambda c: c.index)[:n]
        usage = response.usage
        n_prompt = usage.prompt_tokens if usage else 0
        per_choice = (usage.completion_tokens if usage else 0) // max(1, len(response.choices))
        # the API's stop strings are literal; the regex stops cut the text here
        return [cut_at_stop(Completion(c.message.content or "", n_prompt, per_choice,
                                       c.finish_reason), params.stop)
                for c in choices]

    def close(self) -> None:
        self.client.close()
