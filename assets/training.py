"""Adapter assets: one LoRA adapter per role, trained on every partition of its role dataset.

No `from __future__ import annotations` here: Dagster inspects the context annotation.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from assets.resources import BackendResource, LakeResource, TrainingResource
from malt_lake.markdown import to_markdown
from malt_lake.training.role import LOSS_PLOT, RoleTraining, train_role


class TrainConfig(dg.Config):
    """Which recipe trains the adapter, and on which split of the role datasets."""

    recipe: str | None = Field(default=None, description="Recipe name or TOML path; None = "
                               "the environment's (MALT_RECIPE, else by MALT_ENV).")
    split: str = Field(default="train", description="Split whose partitions are trained on.")
    max_steps: int | None = Field(default=None, description="Cap every stage at this many "
                                  "steps (quick runs); None = the recipe's.")
    force: bool = Field(default=False, description="Retrain even if an adapter of the same "
                        "base model, recipe and rows exists.")


def _train(context: dg.AssetExecutionContext, role: str, config: TrainConfig,
           lake: LakeResource, training: TrainingResource,
           backend: BackendResource) -> dg.MaterializeResult:
    recipe = training.recipe(config.recipe, config.max_steps)
    backend.check_base_model(recipe.base_model)
    result = train_role(lake.lake(), role, recipe, split=config.split, force=config.force,
                        log=context.log.info)
    return dg.MaterializeResult(metadata=_metadata(result))


def _metadata(result: RoleTraining) -> dict:
    if result.status == "skipped":
        return {"status": "skipped", "reason": result.reason}
    manifest = result.manifest
    meta: dict = {
        "status": result.status,
        "version": result.version,
        "path": dg.MetadataValue.path(str(result.directory)),
        "base_model": manifest["base_model"],
        "recipe": manifest["recipe"]["name"],
        "theta": str(manifest["theta"]),
        "wall_time_s": manifest["wall_time_s"],
    }
    for name, stage in manifest["stages"].items():
        if isinstance(stage, str):
            meta[f"{name}_status"] = stage
            continue
        meta[f"{name}_rows"] = stage["rows"]
        meta[f"{name}_steps"] = stage["steps"]
        meta[f"{name}_final_loss"] = stage["final_loss"]
        meta[f"{name}_tokens_per_s"] = stage["tokens_per_s"]
        curve = pl.DataFrame(stage["loss_history"], schema=["step", "loss"], orient="row")
        meta[f"{name}_loss_curve"] = dg.MetadataValue.md(to_markdown(curve))
    meta["loss_plot"] = dg.MetadataValue.path(str(result.directory / LOSS_PLOT))
    return meta


@dg.asset(group_name="train", deps=["sft_generator"], kinds={"pytorch", "peft"})
def generator_adapter(context: dg.AssetExecutionContext, config: TrainConfig,
                      lake: LakeResource, training: TrainingResource,
                      backend: BackendResource) -> dg.MaterializeResult:
    """Generator LoRA: SFT on the answers whose value beat θ."""
    return _train(context, "generator", config, lake, training, backend)


@dg.asset(group_name="train", deps=["sft_verifier", "dpo_verifier"], kinds={"pytorch", "peft"})
def verifier_adapter(context: dg.AssetExecutionContext, config: TrainConfig,
                     lake: LakeResource, training: TrainingResource,
                     backend: BackendResource) -> dg.MaterializeResult:
    """Verifier LoRA: SFT on positive critiques, then DPO on sibling pairs (ref = SFT)."""
    return _train(context, "verifier", config, lake, training, backend)


@dg.asset(group_name="train", deps=["sft_refiner", "dpo_refiner"], kinds={"pytorch", "peft"})
def refiner_adapter(context: dg.AssetExecutionContext, config: TrainConfig,
                    lake: LakeResource, training: TrainingResource,
                    backend: BackendResource) -> dg.MaterializeResult:
    """Refiner LoRA: SFT on positive refinements, then DPO on sibling pairs (ref = SFT)."""
    return _train(context, "refiner", config, lake, training, backend)
