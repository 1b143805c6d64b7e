"""A compact LM head for TRL's SFT and DPO trainers on CPU: score only the labelled positions.

TRL gives both trainers a fused LM head (``trl.trainer.utils.add_fused_lm_head``) that returns
per-token log-probabilities without building the ``[tokens, vocab]`` logits. On a device
without Triton it scores every position, prompt and padding included (to keep tile shapes
fixed for compilers), and folds each tile with a dozen unfused torch passes; on a CPU that was
more than half of an SFT step. This head keeps TRL's contract (same keyword, same
``FusedCausalLMOutput`` fields, zeros where the label is -100) but projects only the labelled
positions, in token chunks whose logits are recomputed in the backward pass instead of kept,
and takes the log-softmax with torch's own kernel. GPUs keep TRL's Triton head.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch

TOKEN_CHUNK = 1024  # labelled positions per projection; bounds the transient fp32 logits


def use_compact_cpu_lm_head(trainer: Any) -> bool:
    """Replace the fused head TRL installed on ``trainer``'s model with the compact one when
    training runs on CPU and the model has plain logits (no soft-capping, scaling, head bias or
    MoE aux loss). Returns whether it did; otherwise TRL's head stays."""
    from peft import PeftModel

    model = trainer.model
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if (trainer.accelerator.device.type != "cpu" or not _plain_logits(base)
            or base.get_output_embeddings().bias is not None):
        return False
    if getattr(trainer, "ref_model", None) is not None:
        return False  # a separate reference model keeps TRL's head; ours use peft adapters
    base.forward = types.MethodType(_compact_forward(type(base).forward), base)
    return True


def _plain_logits(model: Any) -> bool:
    config = model.config.get_text_config()
    scaled = any(getattr(config, name, None) not in (None, 1.0) for name in
                 ("final_logit_softcapping", "logit_scale", "output_multiplier",
                  "lm_head_multiplier", "logits_scaling"))
    return not scaled and not getattr(config, "output_router_logits", False)


def _compact_forward(original_forward):
    @functools.wraps(original_forward)
    def forward(self, *args, fused_lm_head: bool = False, labels=None, shift_labels=None,
                num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            for name, value in (("labels", labels), ("shift_labels", shift_labels),
                                ("num_items_in_batch", num_items_in_batch)):
                if value is not None:
                    kwargs[name] = value
            return original_forward(self, *args, **kwargs)
        from trl.trainer.utils import FusedCausalLMOutput

        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        fields = labelled_log_probs(hidden[mask], self.get_output_embeddings().weight,
                                    labels[mask])
        per_token = {name: value.new_zeros(mask.shape, dtype=value.dtype)
                     .masked_scatter(mask, value) for name, value in fields.items()}
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        loss = -per_token["log_probs"].sum() / count
        return FusedCausalLMOutput(loss=loss, label_mask=mask, **per_token)

    return forward


def labelled_log_probs(hidden: torch.Tensor, weight: torch.Tensor,
                       targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Log-probability of each target (with gradient) and TRL's metric fields (without) for
    ``hidden`` ``[K, H]`` under the head ``weight`` ``[V, H]``, in the autocast dtype when
    autocast is on."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
    with torch.autocast("cpu", enabled=False):
        log_probs, entropy, mean_logits, is_top1, log_sum_sq = _LabelledLogProbs.apply(
            hidden, weight, targets, dtype)
    return {"log_probs": log_probs, "entropy": entropy, "mean_logits": mean_logits,
            "is_top1": is_top1, "log_sum_sq_probs": log_sum_sq}


class _LabelledLogProbs(torch.autograd.Function):
    """Forward: one projection per token chunk, then torch's log-softmax kernels; only the
    per-row log-normalizer is kept. Backward: the chunk's logits are projected again and
    turned into the softmax gradient (one more projection instead of storing ``[K, V]``)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        w = weight.to(dtype)
        outputs = [], [], [], [], [], []
        for start in range(0, hidden.shape[0], TOKEN_CHUNK):
            h, t = hidden[start:start + TOKEN_CHUNK].to(dtype), targets[start:start + TOKEN_CHUNK]
            logits = torch.nn.functional.linear(h, w).float()
            log_z = torch.logsumexp(logits, dim=-1)
            log_p = logits - log_z.unsqueeze(-1)
            p = log_p.exp()
            values = (log_p.gather(-1, t.unsqueeze(-1)).squeeze(-1), -(p * log_p).sum(-1),
                      logits.mean(-1), logits.argmax(-1) == t, torch.log((p * p).sum(-1)), log_z)
            for store, value in zip(outputs, values, strict=True):
                store.append(value)
        log_probs, entropy, mean_logits, is_top1, log_sum_sq, log_z = (
            torch.cat(v) if v else hidden.new_zeros(0, dtype=torch.float32) for v in outputs)
        ctx.save_for_backward(hidden, weight, targets, log_z)
        ctx.dtype = dtype
        ctx.mark_non_differentiable(entropy, mean_logits, is_top1, log_sum_sq)
        return log_probs, entropy, mean_logits, is_top1.bool(), log_sum_sq

    @staticmethod
    def backward(ctx, grad_log_probs, *unused):
        hidden, weight, targets, log_z = ctx.saved_tensors
        if grad_log_probs is None:
            return None, None, None, None
        w = weight.to(ctx.dtype)
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) \
            if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], TOKEN_CHUNK):
            end = start + TOKEN_CHUNK
            h, t = hidden[start:end].to(ctx.dtype), targets[start:end]
            g = grad_log_probs[start:end]
            # d log p_t / d z_j = 1[j = t] - p_j
            grad_logits = (torch.nn.functional.linear(h, w).float()
                           - log_z[start:end].unsqueeze(-1)).exp_().mul_(-g.unsqueeze(-1))
            grad_logits.scatter_add_(-1, t.unsqueeze(-1), g.unsqueeze(-1))
            grad_logits = grad_logits.to(ctx.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = (grad_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.t() @ h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None
