"""Rewards, credit and role datasets: cheap, recomputable from the lake, never a model call.

No `from __future__ import annotations` here: Dagster inspects the context annotation.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from assets import rounds
from assets.partitions import shard_partitions
from assets.resources import LakeResource
from assets.table_metadata import delta_metadata, table_metadata, write_id
from malt_lake.credit import (
    DEFAULT_THETA,
    check_partition,
    compute_credit_to_lake,
    role_dataset_drops,
    role_datasets,
    value_histogram,
)
from malt_lake.lake import Written, partition_lock
from malt_lake.lineage import data_version_of
from malt_lake.markdown import to_markdown
from malt_lake.names import PartitionKey
from malt_lake.schemas import DPO_TABLES, SFT_TABLES
from malt_lake.scoring import generation_rewards as score_generations
from malt_lake.scoring import leaf_rewards as score_leaves
from malt_lake.sqlfiles import sql_path


def _reward_metadata(table, written: Written) -> dict:
    rewards = [r for r in table.column("reward").to_pylist() if r is not None]
    parsed = table.column("parse_ok").to_pylist()
    return {
        "dagster/row_count": table.num_rows,
        "accuracy": sum(rewards) / len(rewards) if rewards else 0.0,
        "parse_rate": sum(parsed) / len(parsed) if parsed else 0.0,
        "failed_samples": table.num_rows - len(rewards),
        **delta_metadata(written),
    }


def _generation_rewards(context: dg.AssetExecutionContext,
                        lake: LakeResource) -> dg.MaterializeResult:
    key, the_lake = PartitionKey.parse(context.partition_key), lake.lake_for(context)
    with partition_lock(the_lake, "generation_rewards", key):
        table = score_generations(the_lake, key)
        written = the_lake.write_partition("generation_rewards", key, table,
                                           write_id=write_id(context, "generation_rewards"))
    return dg.MaterializeResult(metadata=_reward_metadata(table, written),
                                data_version=dg.DataVersion(
                                    data_version_of(table, "pred_answer", "reward")))


def _leaf_rewards(context: dg.AssetExecutionContext, lake: LakeResource):
    key, the_lake = PartitionKey.parse(context.partition_key), lake.lake_for(context)
    with partition_lock(the_lake, "leaf_rewards", key):
        table = score_leaves(the_lake, key)
        written = the_lake.write_partition("leaf_rewards", key, table,
                                           write_id=write_id(context, "leaf_rewards"))
    yield dg.MaterializeResult(metadata=_reward_metadata(table, written),
                               data_version=dg.DataVersion(
                                   data_version_of(table, "pred_answer", "reward")))
    yield _lineage_result(the_lake, key)


def _lineage_result(the_lake, key: PartitionKey) -> dg.AssetCheckResult:
    stale = check_partition(the_lake, key, "lineage")
    return dg.AssetCheckResult(
        check_name="lineage", passed=stale.num_rows == 0,
        metadata={"stale_rows": stale.num_rows,
                  "examples": dg.MetadataValue.md(to_markdown(stale.slice(0, 5))
                                                  if stale.num_rows else "none"),
                  "sql": dg.MetadataValue.path(str(sql_path("checks/lineage")))})


class CreditConfig(dg.Config):
    """MALT's threshold: a node is positive when its value > theta (strict)."""

    theta: float = Field(default=DEFAULT_THETA, description="Threshold in (0, 1); paper: 0.5.")


# blocking: role datasets of a run are not built from credit that fails them
CREDIT_CHECKS = {
    "tree_completeness": "every node has n children or a recorded failure",
    "credit_consistency": "unique node ids, values in [0, 1], labels = value > theta",
}


def _credit(context: dg.AssetExecutionContext, config: CreditConfig, lake: LakeResource):
    key, the_lake = PartitionKey.parse(context.partition_key), lake.lake_for(context)
    with partition_lock(the_lake, "credit", key):
        written = compute_credit_to_lake(the_lake, key, config.theta,
                                         write_id=write_id(context, "credit"))
    frame = pl.from_arrow(the_lake.read_required("credit", key, ["role", "label", "value"]))
    by_role = (frame.group_by("role").agg(
        pl.len().alias("nodes"), pl.col("label").cast(pl.Float64).mean().alias("positive_rate"),
        pl.col("value").mean().alias("mean_value")).sort("role"))
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": written.rows,
        "theta": config.theta,
        "by_role": dg.MetadataValue.md(to_markdown(by_role)),
        "value_histogram": dg.MetadataValue.md(to_markdown(value_histogram(frame.to_arrow()))),
        **delta_metadata(written),
        "sql": dg.MetadataValue.path(str(sql_path("credit/credit"))),
    })
    for name in CREDIT_CHECKS:
        bad = check_partition(the_lake, key, name)
        yield dg.AssetCheckResult(
            check_name=name, passed=bad.num_rows == 0,
            metadata={"violations": bad.num_rows,
                      "examples": dg.MetadataValue.md(to_markdown(bad.slice(0, 5))
                                                      if bad.num_rows else "none")})


def _role_dataset_tables(context: dg.AssetExecutionContext, lake: LakeResource):
    key, the_lake = PartitionKey.parse(context.partition_key), lake.lake_for(context)
    index = rounds.round_of(context)
    with partition_lock(the_lake, "role_datasets", key):
        tables = role_datasets(the_lake, key)
        drops = {row["role"]: row for row in role_dataset_drops(the_lake, key).to_pylist()}
        theta = next((t.column("theta")[0].as_py() for t in tables.values() if t.num_rows),
                     None)
        info = {} if theta is None else {"malt.theta": str(theta)}
        written = {name: the_lake.write_partition(name, key, t, info=info,
                                                  write_id=write_id(context, name))
                   for name, t in tables.items()}
    for name, table in tables.items():
        role, kind = (SFT_TABLES[name], "sft") if name in SFT_TABLES else (DPO_TABLES[name], "dpo")
        yield dg.MaterializeResult(asset_key=rounds.asset_key(name, index), metadata={
            "dagster/row_count": table.num_rows,
            "dropped_equal_text": drops[role][f"{kind}_dropped_equal_text"],
            "theta": table.column("theta")[0].as_py() if table.num_rows else None,
            **delta_metadata(written[name]),
            "sql": dg.MetadataValue.path(str(sql_path(
                "roles/sft" if name in SFT_TABLES else "roles/dpo"))),
        })
    for name, role in DPO_TABLES.items():
        bad = check_partition(the_lake, key, "dpo_pairs", role)
        yield dg.AssetCheckResult(asset_key=rounds.asset_key(name, index),
                                  check_name="pairs_are_siblings",
                                  passed=bad.num_rows == 0,
                                  metadata={"violations": bad.num_rows})


def _role_table_description(name: str, role: str) -> str:
    kind = "SFT positives" if name in SFT_TABLES else "DPO sibling pairs"
    return f"{kind} of the {role} (TRL conversational format)"


def credit_assets(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s rewards, credit and role datasets."""
    def key(name: str) -> dg.AssetKey:
        return rounds.asset_key(name, index)

    common = {"key_prefix": rounds.key_prefix(index), "partitions_def": shard_partitions,
              "group_name": rounds.in_round("credit", index)}

    @dg.asset(deps=[key("generations"), key("questions")], kinds={"delta"},
              metadata=table_metadata("generation_rewards"), **common)
    def generation_rewards(context: dg.AssetExecutionContext,
                           lake: LakeResource) -> dg.MaterializeResult:
        """Whether each generator answer is right (for analytics and the SA baseline)."""
        return _generation_rewards(context, lake)

    lineage = dg.AssetCheckSpec(
        "lineage", asset=key("leaf_rewards"), blocking=True,
        description="every row of the tree was made for its parent's current content (no "
                    "stale subtree after a parent was regenerated); failing blocks credit")

    @dg.asset(deps=[key("refinements"), key("questions")], kinds={"delta"},
              check_specs=[lineage], metadata=table_metadata("leaf_rewards"), **common)
    def leaf_rewards(context: dg.AssetExecutionContext, lake: LakeResource):
        """Binary reward of every refinement: its final answer equals the ground truth."""
        yield from _leaf_rewards(context, lake)

    checks = [dg.AssetCheckSpec(name, asset=key("credit"), blocking=True,
                                description=description)
              for name, description in CREDIT_CHECKS.items()]

    @dg.asset(deps=[leaf_rewards, key("generations"), key("critiques"), key("refinements")],
              check_specs=checks, kinds={"duckdb", "delta"}, metadata=table_metadata("credit"),
              **common)
    def credit(context: dg.AssetExecutionContext, config: CreditConfig, lake: LakeResource):
        """Value of every tree node (mean of its children's values) and its label at theta."""
        yield from _credit(context, config, lake)

    role_specs = [
        dg.AssetSpec(key(name), group_name=rounds.in_round("role_datasets", index),
                     partitions_def=shard_partitions, deps=[credit], kinds={"duckdb", "delta"},
                     metadata=table_metadata(name),
                     description=_role_table_description(name, role))
        for name, role in {**SFT_TABLES, **DPO_TABLES}.items()]
    pair_checks = [dg.AssetCheckSpec("pairs_are_siblings", asset=key(name),
                                     description="each pair: one positive, one negative, one "
                                                 "parent")
                   for name in DPO_TABLES]

    @dg.multi_asset(name=rounds.op_name("role_dataset_tables", index), specs=role_specs,
                    check_specs=pair_checks, can_subset=False)
    def role_dataset_tables(context: dg.AssetExecutionContext, lake: LakeResource):
        """SFT and DPO datasets of every role for one partition, from its credit rows; each
        table's metadata counts the rows left out as same-text noise
        (``dropped_equal_text``)."""
        yield from _role_dataset_tables(context, lake)

    return [generation_rewards, leaf_rewards, credit, role_dataset_tables]
