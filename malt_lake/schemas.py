"""Arrow schemas of the lake's tables: the contracts of DESIGN.md section 3, in code.

Writers cast to these before writing, so every partition of a table has one schema and a
missing table still has a typed (empty) view.
"""

from __future__ import annotations

import pyarrow as pa

CHOICE = pa.struct([("label", pa.string()), ("text", pa.string())])

QUESTIONS = pa.schema(
    [
        ("dataset", pa.string()),
        ("shard", pa.string()),
        ("question_id", pa.string()),
        ("split", pa.string()),
        ("row_index", pa.int64()),
        ("question", pa.string()),
        ("choices", pa.list_(CHOICE)),
        ("answer", pa.string()),
        ("solution", pa.string()),
        ("family", pa.string()),
        ("source", pa.string()),
    ]
)

SHARDS = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("partition_key", pa.string()),
        ("n_questions", pa.int64()),
        ("first_row", pa.int64()),
        ("source", pa.string()),
        ("source_sha256", pa.string()),
        ("n_skipped_rows", pa.int64()),
    ]
)

# Tables partitioned by (dataset, shard) and tables written whole.
PARTITIONED: dict[str, pa.Schema] = {"questions": QUESTIONS}
UNPARTITIONED: dict[str, pa.Schema] = {"shards": SHARDS}


def schema_of(table: str) -> pa.Schema:
    if table in PARTITIONED:
        return PARTITIONED[table]
    if table in UNPARTITIONED:
        return UNPARTITIONED[table]
    raise KeyError(table)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast columns to ``schema``; a missing or extra column is a bug, so it raises."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise ValueError(f"table does not match its contract: missing {missing}, extra {extra}")
    return table.select(schema.names).cast(schema)
