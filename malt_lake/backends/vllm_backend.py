"""The GPU backend: vLLM's offline engine with n-sampling, prefix caching (the n samples and
the siblings of a tree level share prompt prefixes) and a LoRARequest per request.

Imported only when vllm is installed (``pip install -e '.[vllm]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from malt_lake.backends.adapters import adapter_name, check_adapter_dir
from malt_lake.backends.base import Completion, GenerationRequest, SamplingParams, cut_at_stop
from malt_lake.errors import ConfigError


class VLLMBackend:
    def __init__(self, model: str, max_lora_rank: int = 64, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = 4096, dtype: str = "auto") -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError("the vllm backend needs vllm: pip install -e '.[vllm]' on a GPU "
                              "machine") from exc
        from malt_lake.backends.transformers_backend import resolve_model

        self.model_id, source = resolve_model(model)
        self.llm = LLM(model=str(source), enable_lora=True, max_lora_rank=max_lora_rank,
                       enable_prefix_caching=True, trust_remote_code=False, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len)
        self._lora_ids: dict[str, int] = {}

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        directory = check_adapter_dir(adapter, self.model_id)
        key = str(Path(directory).resolve())
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(adapter_name(key), lora_id, key)

    def generate(self, requests: Sequence[GenerationRequest],
                 params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        # one SamplingParams per request: vLLM seeds each request from its own seed
        sampling = [VLLMSamplingParams(n=params.n, temperature=params.temperature,
                                       top_p=params.top_p, max_tokens=params.max_tokens,
                                       seed=r.seed_or(params)) for r in requests]
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=sampling,
                                lora_request=[self._lora(r.adapter) for r in requests],
                                add_generation_prompt=True, use_tqdm=False)
        results = []
        for output in outputs:
            n_prompt = len(output.prompt_token_ids or [])
            # vLLM's stop strings are literal; the regex stops cut the finished text
            results.append([
                cut_at_stop(Completion(o.text, n_prompt, len(o.token_ids),
                                       "stop" if o.finish_reason == "stop" else o.finish_reason),
                            params.stop)
                for o in output.outputs
            ])
        return results

    def close(self) -> None:
        self.llm = None
