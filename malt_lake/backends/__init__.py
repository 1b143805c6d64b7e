"""Generation backends behind one protocol, built from typed settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from malt_lake.backends.base import (
    Backend,
    BackendError,
    Completion,
    GenerationRequest,
    SamplingParams,
    request_seed,
)

BackendKind = Literal["transformers", "vllm", "openai", "fake"]


class BackendSettings(BaseModel):
    """Which model answers, and how."""

    model_config = ConfigDict(extra="forbid")

    kind: BackendKind = Field("transformers", description="transformers | vllm | openai | fake")
    model: str = Field("embedded", description="'embedded', a local model dir, a hub id, or "
                       "the served model name (openai)")
    dtype: str = Field("bfloat16", description="transformers dtype (bfloat16: faster than "
                       "float32 on CPUs with bf16 units)")
    max_batch_rows: int = Field(192, ge=1, description="transformers: rows decoded together")
    base_url: str | None = Field(None, description="openai: server URL ending in /v1")
    api_key: str | None = Field(None, description="openai: bearer token, if the server needs one")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    fake_delay_s: float = Field(0.0, ge=0, description="fake: seconds per batch (tests)")


def build_backend(settings: BackendSettings) -> Backend:
    if settings.kind == "fake":
        from malt_lake.backends.fake import FakeBackend

        return FakeBackend(delay_s=settings.fake_delay_s)
    if settings.kind == "transformers":
        from malt_lake.backends.transformers_backend import TransformersBackend

        return TransformersBackend(settings.model, dtype=settings.dtype,
                                   max_batch_rows=settings.max_batch_rows)
    if settings.kind == "vllm":
        from malt_lake.backends.vllm_backend import VLLMBackend

        return VLLMBackend(settings.model)
    from malt_lake.backends.openai_backend import OpenAIBackend

    if not settings.base_url:
        from malt_lake.errors import ConfigError

        raise ConfigError("the openai backend needs base_url, e.g. http://127.0.0.1:8000/v1")
    return OpenAIBackend(settings.base_url, settings.model, settings.api_key,
                         settings.concurrency)


__all__ = ["Backend", "BackendError", "BackendSettings", "Completion", "GenerationRequest",
           "SamplingParams", "build_backend", "request_seed"]
