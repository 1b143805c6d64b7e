"""Definition metadata of the table assets: their columns (``dagster/column_schema``) from
``malt_lake.schemas``, the one place the lake's columns are defined, so the UI's column view
and the Parquet files cannot drift apart."""

from __future__ import annotations

import dagster as dg

from malt_lake import schemas


def column_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(field.name, str(field.type),
                       constraints=dg.TableColumnConstraints(nullable=field.nullable))
        for field in schemas.schema_of(table)])


def table_metadata(table: str) -> dict:
    """Metadata for the asset that writes ``table``."""
    return {"dagster/column_schema": column_schema(table), "table": table}
