"""Ingestion: the shard catalog (registers partitions) and the questions of each shard.

No `from __future__ import annotations` here: Dagster inspects the context annotation."""


import dagster as dg

from assets import rounds
from assets.partitions import dataset_partitions, shard_partitions
from assets.resources import LakeResource, ProjectResource
from assets.table_metadata import delta_metadata, table_metadata, write_id
from malt_lake.ingest import build_catalog, shard_questions, write_catalog
from malt_lake.lake import partition_lock
from malt_lake.lineage import data_version_of
from malt_lake.markdown import to_markdown
from malt_lake.names import PartitionKey


def _catalog(context: dg.AssetExecutionContext, lake: LakeResource,
             project: ProjectResource) -> dg.MaterializeResult:
    settings = project.settings()
    catalog = build_catalog(settings)
    the_lake = lake.lake_for(context)
    with partition_lock(the_lake, "shards"):
        the_lake.create_tables()  # before partition writers fan out
        written = write_catalog(the_lake, catalog)
    keys = catalog.partition_keys
    known = set(context.instance.get_dynamic_partitions(shard_partitions.name))
    new = [k for k in keys if k not in known]
    if new:
        context.instance.add_dynamic_partitions(shard_partitions.name, new)
    names = [spec.name for spec in settings.datasets]
    known_datasets = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    if set(names) - known_datasets:
        context.instance.add_dynamic_partitions(
            dataset_partitions.name, [n for n in names if n not in known_datasets])
    context.log.info(f"{len(keys)} shard partitions ({len(new)} new)")
    skipped = "\n".join(f"- {p}" for p in catalog.skipped[:20]) or "none"
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(keys),
        "new_partitions": len(new),
        "shards": dg.MetadataValue.md(to_markdown(catalog.shards.drop("source_sha256"))),
        "skipped_rows": dg.MetadataValue.md(skipped),
        **delta_metadata(written),
    })


def _questions(context: dg.AssetExecutionContext, lake: LakeResource,
               project: ProjectResource) -> dg.MaterializeResult:
    key = PartitionKey.parse(context.partition_key)
    the_lake = lake.lake_for(context)
    with partition_lock(the_lake, "questions", key):
        table = shard_questions(the_lake, project.settings(), key)
        written = the_lake.write_partition("questions", key, table,
                                           write_id=write_id(context, "questions"))
    preview = table.select(["question_id", "question", "answer"]).slice(0, 5)
    return dg.MaterializeResult(data_version=dg.DataVersion(data_version_of(table)), metadata={
        "dagster/row_count": table.num_rows,
        **delta_metadata(written),
        "preview": dg.MetadataValue.md(to_markdown(preview)),
    })


def ingest_assets(index: int) -> list[dg.AssetsDefinition]:
    """Round ``index``'s catalog and questions (each round's lake holds its own copy)."""
    common = {"key_prefix": rounds.key_prefix(index),
              "group_name": rounds.in_round("ingest", index), "kinds": {"delta", "polars"}}

    @dg.asset(metadata=table_metadata("shards"), **common)
    def dataset_catalog(context: dg.AssetExecutionContext, lake: LakeResource,
                        project: ProjectResource) -> dg.MaterializeResult:
        """Validates every configured dataset split and registers one partition per shard."""
        return _catalog(context, lake, project)

    @dg.asset(partitions_def=shard_partitions, deps=[dataset_catalog],
              metadata=table_metadata("questions"), **common)
    def questions(context: dg.AssetExecutionContext, lake: LakeResource,
                  project: ProjectResource) -> dg.MaterializeResult:
        """The validated question rows of one shard, with deterministic ids."""
        return _questions(context, lake, project)

    return [dataset_catalog, questions]
