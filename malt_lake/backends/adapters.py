"""LoRA adapters on one in-memory base model, switched per request group."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from malt_lake.errors import ConfigError


def adapter_name(path: str) -> str:
    return "a" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


def check_adapter_dir(path: str, base_model_id: str) -> Path:
    """An adapter must exist, be safetensors, and have been trained on this base model."""
    directory = Path(path)
    config = directory / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(f"adapter {directory} has no adapter_config.json")
    if not (directory / "adapter_model.safetensors").is_file():
        raise ConfigError(f"adapter {directory} has no adapter_model.safetensors "
                          "(only safetensors adapters are loaded)")
    manifest = directory / "manifest.json"
    if manifest.is_file():
        base = json.loads(manifest.read_text()).get("base_model")
        if base and base != base_model_id:
            raise ConfigError(f"adapter {directory} was trained on {base!r}, but the backend "
                              f"runs {base_model_id!r}; use an adapter of this base model")
    return directory


def activate_adapter(backend: Any, adapter: str | None) -> Any:
    """Return the model with ``adapter`` active (None: the plain base model)."""
    from peft import PeftModel

    model = backend.model
    if adapter is None:
        if isinstance(model, PeftModel):
            model.base_model.disable_adapter_layers()
        return model
    directory = check_adapter_dir(adapter, backend.model_id)
    name = adapter_name(adapter)
    if not isinstance(model, PeftModel):
        model = PeftModel.from_pretrained(model, directory, adapter_name=name,
                                          is_trainable=False).eval()
    elif name not in model.peft_config:
        model.load_adapter(directory, adapter_name=name, is_trainable=False)
    model.base_model.enable_adapter_layers()
    model.set_adapter(name)
    backend.adapters[name] = str(directory)
    return model
