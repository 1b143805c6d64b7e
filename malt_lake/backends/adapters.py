"""LoRA adapters on one in-memory base model, switched per request group.

On float32 weights the active adapter is merged into them (W + s·BA), so decoding costs what
the base model costs; peft's unmerged forward adds two small matmuls to every targeted linear,
which makes adapter decoding measurably slower. On bf16/fp16 weights a merge is not exact: a
delta below half a unit in the last place of a weight rounds away, and a few DPO steps make
exactly such deltas, so the merged model would be the base model. There the adapter runs
unmerged (peft computes s·B(Ax) in the adapter's float32 and adds it to each layer's output).
Switching back restores the saved base weights exactly (unmerging by subtraction would leave
rounding in the base). ``backend.merged_adapter`` names the adapter in effect, merged or not.
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
    """Return the model with ``adapter`` in effect (None: the plain base model)."""
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
    model.set_adapter(name, inference_mode=True)
    if merge_is_exact(model):
        _save_base(model, backend)
        model.merge_adapter()
    backend.merged_adapter = name
    backend.adapters[name] = str(directory)
    return model


def merge_is_exact(model: Any) -> bool:
    """Whether merging keeps small LoRA deltas: float32 (or wider) weights do, to ~1e-7 of
    each weight; bf16 keeps ~3 significant digits and fp16 ~3.3, too few."""
    import torch

    return all(layer.get_base_layer().weight.dtype in (torch.float32, torch.float64)
               for layer in _lora_layers(model).values())


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
