"""Adapter assets: one LoRA adapter per role and dataset (the paper trains one adapter set per
benchmark), trained on every train partition of that dataset's role data; ``pool`` trains on
every configured dataset's rows instead.

No `from __future__ import annotations` here: Dagster inspects the context annotation.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from assets import rounds
from assets.concurrency import ACCELERATOR_POOL
from assets.partitions import dataset_partitions
from assets.resources import BackendResource, LakeResource, ProjectResource, TrainingResource
from malt_lake.markdown import to_markdown
from malt_lake.report import inline_image
from malt_lake.training.role import LOSS_PLOT, RoleTraining, train_role


class TrainConfig(dg.Config):
    """Which recipe trains the adapter, and on which split of the role datasets."""

    recipe: str | None = Field(default=None, description="Recipe name or TOML path; None = "
                               "the environment's (MALT_RECIPE, else by MALT_ENV).")
    split: str = Field(default="train", description="Split whose partitions are trained on.")
    max_steps: int | None = Field(default=None, ge=1, description="Cap every stage at this "
                                  "many steps (quick runs); None = the recipe's.")
    force: bool = Field(default=False, description="Retrain even if an adapter of the same "
                        "base model, recipe and rows exists.")
    pool: bool = Field(default=False, description="Train on the role data of every configured "
                       "dataset (one pooled adapter, stored as this dataset's) instead of this "
                       "dataset's alone.")


def _train(context: dg.AssetExecutionContext, role: str, config: TrainConfig,
           lake: LakeResource, project: ProjectResource, training: TrainingResource,
           backend: BackendResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    recipe = training.recipe(config.recipe, config.max_steps)
    backend.check_base_model(recipe.base_model)
    backend.release()  # an engine of this run (expansion, evaluation) gives its memory back
    pooled = [d.name for d in project.settings().datasets] if config.pool else None
    result = train_role(lake.lake_for(context), role, recipe, dataset=dataset, pooled=pooled,
                        split=config.split, force=config.force, log=context.log.info)
    return dg.MaterializeResult(
        metadata=_metadata(result),
        data_version=dg.DataVersion(result.version or f"skipped:{result.reason}"))


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
        meta[f"{name}_dropped_too_long"] = stage.get("dropped_too_long", 0)
        meta[f"{name}_steps"] = stage["steps"]
        meta[f"{name}_final_loss"] = stage["final_loss"]
        meta[f"{name}_tokens_per_s"] = stage["tokens_per_s"]
        curve = pl.DataFrame(stage["loss_history"], schema=["step", "loss"], orient="row")
        meta[f"{name}_loss_curve"] = dg.MetadataValue.md(to_markdown(curve))
    plot = result.directory / LOSS_PLOT
    meta["loss_plot"] = dg.MetadataValue.path(str(plot))
    if plot.is_file():  # inline, as the evaluation's chart
        meta["loss_chart"] = dg.MetadataValue.md(inline_image(plot))
    return meta


# each adapter's role tables (it reads every shard of them) and what it is trained on
ADAPTERS = {
    "generator": (("sft_generator",), "Generator LoRA: SFT on the answers whose value beat θ."),
    "verifier": (("sft_verifier", "dpo_verifier"), "Verifier LoRA: SFT on positive critiques, "
                 "then DPO on sibling pairs (ref = SFT)."),
    "refiner": (("sft_refiner", "dpo_refiner"), "Refiner LoRA: SFT on positive refinements, "
                "then DPO on sibling pairs (ref = SFT)."),
}


def training_assets(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s three adapters, each reading every shard of its role tables (the
    asset itself reads its dataset's train shards)."""
    return [_adapter_asset(role, index) for role in ADAPTERS]


def _adapter_asset(role: str, index: int) -> dg.AssetsDefinition:
    tables, description = ADAPTERS[role]

    @dg.asset(name=f"{role}_adapter", key_prefix=rounds.key_prefix(index),
              group_name=rounds.in_round("train", index), partitions_def=dataset_partitions,
              kinds={"pytorch", "peft"}, description=description,
              pool=ACCELERATOR_POOL,
              deps=[dg.AssetDep(rounds.asset_key(t, index),
                                partition_mapping=dg.AllPartitionMapping()) for t in tables])
    def adapter(context: dg.AssetExecutionContext, config: TrainConfig, lake: LakeResource,
                project: ProjectResource, training: TrainingResource,
                backend: BackendResource) -> dg.MaterializeResult:
        return _train(context, role, config, lake, project, training, backend)

    return adapter
