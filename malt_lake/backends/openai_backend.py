"""Any OpenAI-compatible chat server (``vllm serve``, llama.cpp server, a hosted API).

Bounded concurrency, retries with backoff on transient errors (429, 5xx, connection
errors). A request that still fails is a recorded failure for its n samples; a batch in
which every request fails raises, so the run stops and can resume later.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from malt_lake.backends.base import (
    BackendError,
    Completion,
    GenerationRequest,
    SamplingParams,
    cut_at_stop,
)

TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 4, timeout_s: float = 120.0,
                 backoff_s: float = 0.5) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s

    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            results = list(pool.map(lambda r: self._one(r, params), requests))
        if results and all(c.error for cs in results for c in cs):
            raise BackendError(f"every request to {self.base_url} failed; first error: "
                               f"{results[0][0].error}")
        return results

    def _one(self, request: GenerationRequest, params: SamplingParams) -> list[Completion]:
        body = json.dumps({
            "model": request.adapter or self.model_id, "messages": request.messages,
            "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_tokens, "seed": request.seed_or(params),
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            http = urllib.request.Request(f"{self.base_url}/chat/completions", data=body,
                                          headers=headers, method="POST")
            try:
                with urllib.request.urlopen(http, timeout=self.timeout_s) as response:
                    # the API's stop strings are literal; the regex stops cut the text here
                    return [cut_at_stop(c, params.stop)
                            for c in _parse(json.loads(response.read()), params.n)]
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
                if exc.code not in TRANSIENT_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            except (ValueError, KeyError, TypeError) as exc:
                error = f"malformed response: {exc}"
                break
        return [Completion.failed(error) for _ in range(params.n)]

    def close(self) -> None:
        pass


def _parse(payload: dict, n: int) -> list[Completion]:
    choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
    usage = payload.get("usage") or {}
    n_prompt = int(usage.get("prompt_tokens", 0))
    per_choice = int(usage.get("completion_tokens", 0)) // max(1, len(choices))
    out = [Completion(c["message"]["content"], n_prompt, per_choice, c.get("finish_reason"))
           for c in choices[:n]]
    out += [Completion.failed(f"server returned {len(choices)} of {n} choices")
            for _ in range(n - len(out))]
    return out
