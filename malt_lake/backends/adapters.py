"""LoRA adapters on one in-memory base model, switched per request group.

The active adapter is merged into the base weights (W + s·BA) so decoding costs what the base
model costs; peft's unmerged forward adds two small matmuls to every targeted linear, which
made adapter decoding ~1.45x slower here. Switching back restores the saved base weights
exactly (unmerging by subtraction would leave bf16 rounding in the base).
"""

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
    """Return the model with ``adapter`` merged in (None: the plain base model)."""
    from peft import PeftModel

    model = backend.model
    name = None if adapter is None else adapter_name(adapter)
    if backend.merged_adapter == name:
        return model
    if isinstance(model, PeftModel):
        _restore_base(model, backend)
    if adapter is None:
        if isinstance(model, PeftModel):
            model.base_model.disable_adapter_layers()
        return model
    directory = check_adapter_dir(adapter, backend.model_id)
    if not isinstance(model, PeftModel):
        model = PeftModel.from_pretrained(model, directory, adapter_name=name,
                                          is_trainable=False).eval()
    elif name not in model.peft_config:
        model.load_adapter(directory, adapter_name=name, is_trainable=False)
    model.base_model.enable_adapter_layers()
    model.set_adapter(name)
    _save_base(model, backend)
    model.merge_adapter()
    backend.merged_adapter = name
    backend.adapters[name] = str(directory)
    return model


def _lora_layers(model: Any) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _save_base(model: Any, backend: Any) -> None:
    """Keep a copy of every LoRA-targeted base weight (once per module, while unmerged)."""
    saved: dict[str, Any] = backend.base_weights
    for module_name, layer in _lora_layers(model).items():
        if module_name not in saved:
            saved[module_name] = layer.get_base_layer().weight.detach().clone()


def _restore_base(model: Any, backend: Any) -> None:
    saved: dict[str, Any] = backend.base_weights
    for module_name, layer in _lora_layers(model).items():
        if layer.merged:
            layer.get_base_layer().weight.data.copy_(saved[module_name])
            layer.merged_adapters = []
    backend.merged_adapter = None
