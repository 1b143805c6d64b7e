"""Definition metadata of the table assets: their columns (``dagster/column_schema``) from
``malt_lake.schemas``, the one place the lake's columns are defined, so the UI's column view
and the Parquet files cannot drift apart."""

from __future__ import annotations

import dagster as dg

from malt_lake import schemas
from malt_lake.lake import Written


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(field.name, str(field.type),
                       constraints=dg.TableColumnConstraints(nullable=field.nullable))
        for field in schemas.schema_of(table)])


def table_metadata(table: str) -> dict:
    """Metadata for the asset that writes ``table``."""
    return {"dagster/column_schema": column_schema(table), "table": table}


def delta_metadata(written: Written) -> dict:
    """Where a write landed: the Delta table and the version this materialization made
    (``malt-lake sql --as-of <table>=<version>`` reads it back after later writes)."""
    return {"path": dg.MetadataValue.path(written.uri),
            "delta_version": written.version,
            "retried_write_skipped": written.skipped}


def write_id(context: dg.AssetExecutionContext, table: str) -> str:
    """One id per (run, table, partition): a retried step of the same run that finds its
    write committed does not commit it again."""
    partition = context.partition_key if context.has_partition_key else "-"
    return f"{context.run_id}/{table}/{partition}"
