"""One SFT or DPO stage with TRL and a peft LoRA adapter: TRL does the training, we record it.

SFT wraps the base model with a fresh ``LoraConfig``. DPO loads the SFT adapter as the
trainable policy; TRL then copies it into a frozen ``ref`` adapter, so the reference is the
SFT model (as in the paper), not the bare base.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from malt_lake.training.config import LoraSettings, StageSettings
from malt_lake.training.lm_head import use_compact_cpu_lm_head

Log = Callable[[str], None]


@dataclass
class StageResult:
    stage: str                    # "sft" | "dpo"
    rows: int
    steps: int
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    train_runtime_s: float = 0.0
    tokens: int = 0               # tokens the trainer consumed (TRL's num_tokens)
    dropped_too_long: int = 0     # rows left out because TRL would have cut them at max_length
    lm_head: str = "trl-fused"    # "compact-cpu": malt_lake.training.lm_head scored the tokens

    @property
    def final_loss(self) -> float | None:
        return self.loss_history[-1][1] if self.loss_history else None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_runtime_s if self.train_runtime_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "rows": self.rows, "steps": self.steps,
                "loss_history": self.loss_history, "final_loss": self.final_loss,
                "train_runtime_s": round(self.train_runtime_s, 3), "tokens": self.tokens,
                "tokens_per_s": round(self.tokens_per_s, 2),
                "dropped_too_long": self.dropped_too_long, "lm_head": self.lm_head}


def load_tokenizer(source: str | Path):
    """The base model's tokenizer alone (no remote code): enough to measure rows before the
    weights are loaded."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(source: str | Path, dtype: str):
    """The base model and tokenizer, safetensors only, no remote code; on a CPU, with the
    attention that picks eager or SDPA by length (``malt_lake.training.attention``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from malt_lake.training.attention import training_attention

    tokenizer = load_tokenizer(source)
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        source, config=config, dtype=getattr(torch, dtype), use_safetensors=True,
        trust_remote_code=False, attn_implementation=training_attention(config))
    return model, tokenizer


def lora_config(lora: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def common_args(stage: StageSettings, seed: int, scratch: Path, bf16: bool,
                gradient_checkpointing: bool) -> dict[str, Any]:
    """TrainingArguments shared by both stages (TRL's configs extend them). ``bf16`` and
    ``gradient_checkpointing`` are set explicitly either way: TRL's configs default both to
    True, transformers' to False."""
    import torch

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(scratch), learning_rate=stage.learning_rate,
        num_train_epochs=stage.epochs, max_steps=stage.max_steps,
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        warmup_steps=stage.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        max_length=stage.max_length, logging_steps=1, save_strategy="no", report_to=[],
        seed=seed, data_seed=seed, use_cpu=not on_gpu,
        bf16=bf16, gradient_checkpointing=gradient_checkpointing, dataloader_num_workers=0,
    )


def train_sft(model, tokenizer, dataset, stage: StageSettings, lora: LoraSettings, seed: int,
              scratch: Path, log: Log = print, *, bf16: bool = False,
              gradient_checkpointing: bool = True):
    """LoRA SFT on prompt/completion messages; returns (peft model, result). ``bf16``: compute
    under bf16 autocast (weights keep their dtype)."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_args(stage, seed, scratch, bf16 or _dtype_of(model) == "bfloat16",
                                   gradient_checkpointing))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora_config(lora),
                         callbacks=[LossRecorder("sft", log)])
    return trainer.model, _run(trainer, "sft", len(dataset))


def train_dpo(policy, tokenizer, dataset, stage: StageSettings, seed: int, scratch: Path,
              log: Log = print, *, bf16: bool = False, gradient_checkpointing: bool = True):
    """DPO on prompt/chosen/rejected; ``policy`` is a trainable PeftModel (the SFT adapter),
    which TRL also freezes a copy of as the reference."""
    from trl import DPOConfig, DPOTrainer

    bf16 = bf16 or _dtype_of(policy) == "bfloat16"
    args = DPOConfig(**common_args(stage, seed, scratch, bf16, gradient_checkpointing),
                     beta=stage.beta)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[LossRecorder("dpo", log)])
    return trainer.model, _run(trainer, "dpo", len(dataset))


def _run(trainer, stage: str, rows: int) -> StageResult:
    from peft.helpers import disable_input_dtype_casting

    compact = use_compact_cpu_lm_head(trainer)
    started = time.perf_counter()
    # Under bf16 autocast peft's cast of each adapter's input to the float32 LoRA weights is
    # undone by autocast in the very next op: two copies of the activations per adapted
    # module for the same numbers. Without autocast the cast is needed, and kept.
    with disable_input_dtype_casting(trainer.model, active=trainer.args.bf16):
        output = trainer.train()
    runtime = float(output.metrics.get("train_runtime", time.perf_counter() - started))
    history = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history
               if "loss" in h]
    tokens = max((int(h.get("num_tokens", 0)) for h in trainer.state.log_history), default=0)
    bad = [step for step, loss in history if not math.isfinite(loss)]
    if bad:
        raise FloatingPointError(f"{stage} loss is not finite at steps {bad}; lower the "
                                 "learning rate or use float32")
    return StageResult(stage, rows, trainer.state.global_step, history, runtime, tokens,
                       lm_head="compact-cpu" if compact else "trl-fused")


def _dtype_of(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


class LossRecorder(TrainerCallback):
    """Logs each step's loss as it happens (the Dagster run log, the CLI)."""

    def __init__(self, stage: str, log: Log) -> None:
        self.stage, self.log = stage, log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.log(f"{self.stage} step {state.global_step}/{state.max_steps} "
                     f"loss {float(logs['loss']):.4f}")
