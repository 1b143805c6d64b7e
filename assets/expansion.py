"""Tree expansion assets: generator answers, verifier critiques, refiner final answers.

No `from __future__ import annotations` here: Dagster inspects the context annotation.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from assets import rounds
from assets.concurrency import ACCELERATOR_POOL
from assets.partitions import shard_partitions
from assets.resources import BackendResource, LakeResource, ProjectResource
from assets.table_metadata import delta_metadata, table_metadata, write_id
from malt_lake.expand import ROLE_TABLE, Expansion, RoleSettings
from malt_lake.lake import partition_lock
from malt_lake.lineage import data_version_of
from malt_lake.markdown import to_markdown
from malt_lake.names import PartitionKey
from malt_lake.training.store import AdapterStore


class ExpandConfig(dg.Config, RoleSettings):
    """Sampling for one role: the library's ``RoleSettings`` (fields, defaults and bounds)
    as the asset's run config; defaults are the paper's (n = 3, temperature 0.3)."""

    adapter: str | None = Field(None, description="LoRA adapter dir for this role; None = "
                                "the base model in round 1, round i-1's adapter of this role "
                                "and dataset in round i >= 2.")


def _expand(context: dg.AssetExecutionContext, role: str, config: ExpandConfig,
            lake: LakeResource, project: ProjectResource,
            backend: BackendResource) -> dg.MaterializeResult:
    key = PartitionKey.parse(context.partition_key)
    the_lake = lake.lake_for(context)
    table_name = ROLE_TABLE[role]
    spec = project.settings().dataset(key.dataset)
    adapter = config.adapter or _previous_round_adapter(context, lake, role, key.dataset)
    settings = RoleSettings(**{**config.model_dump(), "adapter": adapter}).with_budget(
        spec.budgets(), role)
    with partition_lock(the_lake, table_name, key):
        expansion = Expansion(the_lake, key, role, backend.engine(), settings,
                              log=context.log.info, prompts=spec.prompts,
                              cut_loops=spec.cut_loops, write_id=write_id(context, table_name))
        table = expansion.run()
    rows = table.to_pylist()
    failed = sum(1 for r in rows if r["error"] is not None)
    unparsed = sum(1 for r in rows if r["error"] is None and not r["parse_ok"])
    truncated = sum(1 for r in rows if r["finish_reason"] == "length")
    tokens = sum(r["n_tokens"] for r in rows)
    sample = table.select(["prompt", "text", "pred_answer"]).slice(0, 3).to_pylist()
    preview = [{"text": r["text"], "pred_answer": r["pred_answer"]} for r in sample]
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version_of(table)), metadata={
        "dagster/row_count": table.num_rows,
        "failed_samples": failed,
        "unparsed_samples": unparsed,
        "truncated_samples": truncated,
        "truncation_rate": truncated / len(rows) if rows else 0.0,
        "max_tokens": settings.max_tokens,
        "prompts": spec.prompts or spec.family,
        "cut_loops": spec.cut_loops,
        "completion_tokens": tokens,
        "model": rows[0]["model"] if rows else "",
        "round": rounds.round_of(context),
        "adapter": settings.adapter or "none (base model)",
        **delta_metadata(expansion.written),
        "preview": dg.MetadataValue.md(to_markdown(pl.DataFrame(preview)) if preview
                                       else "empty"),
    })


def _previous_round_adapter(context: dg.AssetExecutionContext, lake: LakeResource, role: str,
                            dataset: str) -> str | None:
    """Round i >= 2 expands a role with round i-1's current adapter of that role and dataset
    (the base model, with a warning, where round i-1 trained none: no positives)."""
    index = rounds.round_of(context)
    if index == 1:
        return None
    adapter = AdapterStore(lake.lake(index - 1), dataset).current_paths((role,))[role]
    if adapter is None:
        context.log.warning(f"round {index - 1} has no {dataset} {role} adapter: round {index} "
                            f"expands the {role} with the base model")
    return adapter


# each role's asset: the asset it expands (its parent) and what it holds
EXPANSIONS = {
    "generator": ("questions", "n generator answers per question."),
    "verifier": ("generations", "n verifier critiques per generator answer."),
    "refiner": ("critiques", "n refiner final answers per critique: the leaves of the tree."),
}


def expansion_assets(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s expansion assets (``assets.rounds``)."""
    return [_expansion_asset(role, index) for role in EXPANSIONS]


def _expansion_asset(role: str, index: int) -> dg.AssetsDefinition:
    parent, description = EXPANSIONS[role]

    @dg.asset(name=ROLE_TABLE[role], key_prefix=rounds.key_prefix(index),
              group_name=rounds.in_round("expand", index), partitions_def=shard_partitions,
              kinds={"delta", "llm"}, description=description,
              pool=ACCELERATOR_POOL,
              metadata=table_metadata(ROLE_TABLE[role]),
              deps=[rounds.asset_key(parent, index), *rounds.previous_adapter(role, index)])
    def expand(context: dg.AssetExecutionContext, config: ExpandConfig, lake: LakeResource,
               project: ProjectResource, backend: BackendResource) -> dg.MaterializeResult:
        return _expand(context, role, config, lake, project, backend)

    return expand
