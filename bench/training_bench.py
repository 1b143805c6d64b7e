"""Training benchmark: our role-training path vs TRL called directly, same data and config.

Builds one partition's role datasets with the fast fake backend (the texts don't matter for
throughput), then trains the refiner (LoRA SFT, then DPO from the SFT adapter) twice, side by
side in one run: through ``malt_lake.training.role.train_role`` (lake → DuckDB → datasets →
TRL → adapter + manifest) and through a hand-written TRL script on the same rows read straight
from the Parquet files. Reports trainer tokens/s (TRL's own token count over its train
runtime) and end-to-end seconds of each, their ratios, and both loss curves (same seed, same
rows). The direct script keeps TRL's defaults (float32 weights, gradient checkpointing, TRL's
fused LM head) with the recipe's steps, batch sizes, learning rates, LoRA and bf16 autocast;
our path runs the recipe as written (bf16 frozen base with float32 LoRA, no checkpointing,
the compact CPU LM head of ``malt_lake.training.lm_head``).

It also prints the day's bf16 matmul rate (the expansion bench's shape mix, measured before
and after the runs; the CPU recipe computes in bf16 autocast) and each stage's tokens/s as a
fraction of the bound that rate sets: 4 x parameters FLOPs a token for SFT (forward, and the
activation gradients through the frozen base), 6 x for DPO (plus the reference model's
forward); LoRA's own FLOPs and attention are left out, so the bound is optimistic.

    .venv/bin/python bench/training_bench.py --steps 4 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MALT_ENV", "test")

KEY = "arith.train.0000"
TREE = ["questions", "generations", "critiques", "refinements", "generation_rewards",
        "leaf_rewards", "credit", "sft_generator", "sft_verifier", "sft_refiner",
        "dpo_generator", "dpo_verifier", "dpo_refiner"]


def build_lake(root: Path) -> None:
    import dagster as dg

    from assets.definitions import ALL_ASSETS
    from assets.resources import (
        BackendResource,
        LakeResource,
        ProjectResource,
        TrainingResource,
    )

    resources = {"lake": LakeResource(warehouse=str(root)),
                 "project": ProjectResource(config_file=None),
                 "backend": BackendResource(kind="fake", model="fake"),
                 "training": TrainingResource()}
    with dg.instance_for_test() as instance:
        assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                              resources=resources).success
        assert dg.materialize(ALL_ASSETS, selection=TREE, partition_key=KEY,
                              instance=instance, resources=resources).success


def ours(root: Path, steps: int) -> dict:
    from malt_lake.lake import Lake
    from malt_lake.training import load_recipe
    from malt_lake.training.role import train_role

    recipe = load_recipe("cpu-smollm2").with_stages(max_steps=steps)
    started = time.perf_counter()
    result = train_role(Lake(root), "refiner", recipe, dataset=KEY.split(".")[0], force=True,
                        log=lambda m: None)
    wall = time.perf_counter() - started
    stages = result.manifest["stages"]
    return {"wall_s": wall, **{f"{k}_tok_s": v["tokens_per_s"] for k, v in stages.items()},
            **{f"{k}_tokens": v["tokens"] for k, v in stages.items()},
            **{f"{k}_losses": [loss for _, loss in v["loss_history"]] for k, v in stages.items()}}


def direct(root: Path, steps: int, out: Path) -> dict:
    """TRL as its docs show it: no malt_lake code between the Parquet rows and the trainer."""
    import torch
    from datasets import Dataset
    from deltalake import DeltaTable
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from malt_lake.backends.embedded import embedded_model_dir
    from malt_lake.training import load_recipe

    started = time.perf_counter()
    lake = root / "lake"
    sft_rows = DeltaTable(str(lake / "sft_refiner")).to_pyarrow_table(
        columns=["prompt", "completion"])
    dpo_rows = DeltaTable(str(lake / "dpo_refiner")).to_pyarrow_table(
        columns=["prompt", "chosen", "rejected"])
    model_dir = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # the recipe's steps, batch sizes, learning rates and LoRA, written out by hand; the rest
    # is TRL's defaults
    recipe = load_recipe("cpu-smollm2").with_stages(max_steps=steps)
    refiner, lora = recipe.role("refiner"), recipe.lora
    sft_stage, dpo_stage = refiner.sft, refiner.dpo

    def common(stage) -> dict:
        return dict(max_steps=stage.max_steps, per_device_train_batch_size=stage.batch_size,
                    learning_rate=stage.learning_rate, max_length=stage.max_length,
                    warmup_steps=stage.warmup_ratio, logging_steps=1, save_strategy="no",
                    report_to=[], seed=recipe.seed, data_seed=recipe.seed, use_cpu=True,
                    bf16=recipe.bf16_compute)  # explicit: TRL defaults it to True

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sft = SFTTrainer(model=model, train_dataset=Dataset(sft_rows), processing_class=tokenizer,
                     args=SFTConfig(output_dir=str(out / "sft"), **common(sft_stage)),
                     peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha,
                                            lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules),
                                            task_type="CAUSAL_LM"))
    sft_out = sft.train()
    sft.model.save_pretrained(out / "sft-adapter")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    policy = PeftModel.from_pretrained(base, out / "sft-adapter", is_trainable=True)
    dpo = DPOTrainer(model=policy, train_dataset=Dataset(dpo_rows), processing_class=tokenizer,
                     args=DPOConfig(output_dir=str(out / "dpo"), beta=dpo_stage.beta,
                                    **common(dpo_stage)))
    dpo_out = dpo.train()
    dpo.model.save_pretrained(out / "dpo-adapter", selected_adapters=["default"])
    wall = time.perf_counter() - started

    def tokens(trainer) -> int:
        return max(int(h.get("num_tokens", 0)) for h in trainer.state.log_history)

    def losses(trainer) -> list[float]:
        return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]

    return {"wall_s": wall,
            "sft_tok_s": tokens(sft) / sft_out.metrics["train_runtime"],
            "dpo_tok_s": tokens(dpo) / dpo_out.metrics["train_runtime"],
            "sft_tokens": tokens(sft), "dpo_tokens": tokens(dpo),
            "sft_losses": losses(sft), "dpo_losses": losses(dpo)}


def matmul_rate(model, rows: int = 512) -> float:
    """bf16 GFLOP/s at the model's shapes in forward-pass proportions (``rows`` tokens)."""
    from expansion_bench import ceiling_measurements

    return ceiling_measurements(model, rows)["shape_mix"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4, help="Optimizer steps per stage.")
    parser.add_argument("--repeats", type=int, default=1, help="Alternating pairs of runs.")
    args = parser.parse_args()
    from expansion_bench import stock_model

    model = stock_model()  # the base model's shapes, for the matmul rate only
    n_params = sum(p.numel() for p in model.parameters())
    rate_before = matmul_rate(model)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "warehouse"
        build_lake(root)
        results: dict[str, list[dict]] = {"ours": [], "direct": []}
        for repeat in range(args.repeats):
            order = ["ours", "direct"] if repeat % 2 == 0 else ["direct", "ours"]
            for name in order:
                run = ours(root, args.steps) if name == "ours" else \
                    direct(root, args.steps, Path(temp) / f"direct-{repeat}")
                results[name].append(run)
                print(f"{name:6} " + "  ".join(f"{k}={v:.1f}" for k, v in run.items()
                                               if not k.endswith("_losses")), flush=True)

    def mean(name: str, key: str) -> float:
        return sum(r[key] for r in results[name]) / len(results[name])

    assert mean("ours", "sft_tokens") == mean("direct", "sft_tokens"), "different work"
    assert mean("ours", "dpo_tokens") == mean("direct", "dpo_tokens"), "different work"
    print(f"\nrefiner, {args.steps} SFT + {args.steps} DPO steps (cpu-smollm2 batch sizes), "
          f"{args.repeats} pair(s), same tokens in both paths")
    for key in ("sft_tok_s", "dpo_tok_s"):
        a, b = mean("ours", key), mean("direct", key)
        print(f"{key:10} ours {a:8.1f}  TRL direct {b:8.1f}  ours/direct {a / b:.3f}")
    rate_after = matmul_rate(model)
    gflops = (rate_before + rate_after) / 2
    print(f"bf16 matmul {gflops:.0f} GFLOP/s (before {rate_before:.0f}, after "
          f"{rate_after:.0f}); {n_params / 1e6:.1f} M parameters")
    for key, flops_per_param in (("sft_tok_s", 4), ("dpo_tok_s", 6)):
        bound = gflops * 1e9 / (flops_per_param * n_params)
        print(f"{key:10} bound {bound:8.1f}  ours {mean('ours', key) / bound:6.1%}  "
              f"TRL direct {mean('direct', key) / bound:6.1%} of it")
    for stage in ("sft", "dpo"):  # same seed, same rows: the curves should agree within noise
        for name in ("ours", "direct"):
            curve = " ".join(f"{loss:.4f}" for loss in results[name][0][f"{stage}_losses"])
            print(f"{stage} loss per step, {name:6}: {curve}")
    a, b = mean("ours", "wall_s"), mean("direct", "wall_s")
    print(f"{'wall_s':10} ours {a:8.1f}  TRL direct {b:8.1f}  direct/ours {b / a:.3f} "
          "(ours also writes the manifest and loss plot)")


if __name__ == "__main__":
    main()
