"""The compact CPU LM head gives TRL's trainers the numbers TRL's own fused head gives."""

from __future__ import annotations

import pytest
import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction

from malt_lake.training import lm_head
from malt_lake.training.lm_head import labelled_log_probs, use_compact_cpu_lm_head

FIELDS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def test_labelled_log_probs_match_trls_kernel_values_and_gradients(monkeypatch):
    monkeypatch.setattr(lm_head, "TOKEN_CHUNK", 7)  # 20 tokens: three chunks, one partial
    torch.manual_seed(0)
    hidden = torch.randn(20, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    upstream = torch.randn(20, dtype=torch.float64)

    ours = labelled_log_probs(hidden, weight, targets)
    (ours["log_probs"] * upstream).sum().backward()
    our_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    theirs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 13, None, 1.0,
                                          FIELDS)
    (theirs[0] * upstream).sum().backward()

    assert torch.allclose(ours["log_probs"].double(), theirs[0].double(), atol=1e-5)
    for name, value in zip(FIELDS, theirs[1:], strict=True):
        assert torch.allclose(ours[name].double(), value.double(), atol=1e-5), name
    assert torch.allclose(our_grads[0], hidden.grad, atol=1e-5)
    assert torch.allclose(our_grads[1], weight.grad, atol=1e-5)
    assert ours["is_top1"].any() or not theirs[-1].any()


def test_under_bf16_autocast_the_log_probs_match_trls_kernel():
    """The CPU recipe's case: hidden states and head in bf16 under autocast."""
    torch.manual_seed(1)
    hidden = torch.randn(12, 32, dtype=torch.bfloat16)
    weight = torch.randn(300, 32, dtype=torch.bfloat16) * 0.2
    targets = torch.randint(0, 300, (12,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = labelled_log_probs(hidden, weight, targets)
        theirs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 128, None,
                                              1.0, FIELDS)
    assert ours["log_probs"].dtype == torch.float32
    assert torch.allclose(ours["log_probs"], theirs[0].float(), atol=1e-3)
    assert torch.allclose(ours["entropy"], theirs[1].float(), atol=1e-3)


def test_no_labelled_token_gives_a_zero_loss_that_still_backpropagates():
    hidden = torch.randn(0, 8, requires_grad=True)
    out = labelled_log_probs(hidden, torch.randn(30, 8), torch.zeros(0, dtype=torch.long))
    assert out["log_probs"].shape == (0,)
    out["log_probs"].sum().backward()
    assert hidden.grad.shape == (0, 8)


def _loss_and_grads(trainer, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    """One batch's loss and the trainable parameters' gradients, through the trainer."""
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                         if p.requires_grad}


@pytest.fixture
def embedded():
    from malt_lake.backends.transformers_backend import resolve_model
    from malt_lake.training.trainer import load_base

    return load_base(resolve_model("embedded")[1], "float32")


def test_an_sft_batch_has_the_same_loss_and_gradients_under_both_heads(embedded, tmp_path):
    """One real batch of TRL's SFT trainer on the embedded model, through TRL's fused head and
    then through the compact head: same loss, same LoRA gradients, same metrics."""
    from trl import SFTConfig, SFTTrainer

    from malt_lake.training import load_recipe
    from malt_lake.training.trainer import common_args, lora_config
    from tests.test_training import _tiny_sft_dataset

    model, tokenizer = embedded
    recipe = load_recipe("cpu-smollm2")
    args = SFTConfig(**common_args(recipe.role("generator").sft, 0, tmp_path, False, False))
    trainer = SFTTrainer(model=model, args=args, train_dataset=_tiny_sft_dataset(),
                         processing_class=tokenizer, peft_config=lora_config(recipe.lora))
    for name, param in trainer.model.named_parameters():  # B = 0 would hide A's gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    batch = next(iter(trainer.get_train_dataloader()))

    fused_loss, fused_grads = _loss_and_grads(trainer, batch)
    fused_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert use_compact_cpu_lm_head(trainer)
    compact_loss, compact_grads = _loss_and_grads(trainer, batch)
    compact_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    assert compact_loss == pytest.approx(fused_loss, rel=1e-5)
    for name, grad in fused_grads.items():
        assert torch.allclose(compact_grads[name], grad, rtol=1e-3, atol=1e-7), name
    assert compact_metrics["entropy"] == pytest.approx(fused_metrics["entropy"], rel=1e-4)
    assert compact_metrics["mean_token_accuracy"] == fused_metrics["mean_token_accuracy"]
    # generation and plain forwards are untouched
    ids = batch["input_ids"][:1]
    assert trainer.model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


def test_under_autocast_skipping_peft_input_casts_changes_no_number():
    """Why training may disable peft's input casts under bf16 autocast (trainer._run):
    autocast casts the input back in the next op, so the adapter's output is the same."""
    from peft import LoraConfig, get_peft_model
    from peft.helpers import disable_input_dtype_casting

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(32, 48)).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["0"], init_lora_weights=False))
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = model(x)
        with disable_input_dtype_casting(model):
            uncast = model(x)
    assert torch.equal(cast, uncast)


def test_a_dpo_batch_has_the_same_loss_and_gradients_under_both_heads(embedded, tmp_path):
    """One DPO batch (policy and its reference, peft's adapter disabled) through TRL's fused
    head and then through the compact one."""
    from datasets import Dataset
    from peft import get_peft_model
    from trl import DPOConfig, DPOTrainer

    from malt_lake.training import load_recipe
    from malt_lake.training.trainer import common_args, lora_config

    model, tokenizer = embedded
    recipe = load_recipe("cpu-smollm2")
    policy = get_peft_model(model, lora_config(recipe.lora))
    for name, param in policy.named_parameters():  # a policy that differs from its reference
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 2?"}],
             "chosen": [{"role": "assistant", "content": f"Final Answer: {i + 2}"}],
             "rejected": [{"role": "assistant", "content": f"Final Answer: {i + 3}"}]}
            for i in range(4)]
    args = DPOConfig(**common_args(recipe.role("refiner").dpo, 0, tmp_path, False, False),
                     beta=0.2)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))

    fused_loss, fused_grads = _loss_and_grads(trainer, batch)
    assert use_compact_cpu_lm_head(trainer)
    compact_loss, compact_grads = _loss_and_grads(trainer, batch)
    assert compact_loss == pytest.approx(fused_loss, rel=1e-5)
    for name, grad in fused_grads.items():
        assert torch.allclose(compact_grads[name], grad, rtol=1e-3, atol=1e-7), name
