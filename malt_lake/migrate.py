"""Convert a warehouse written by malt-lake before Delta (one plain Parquet file per
partition) into Delta tables, in place and without a model call.

Each old table directory is renamed aside (``<table>.plain-parquet``), its files are
committed partition by partition into a new Delta table, then the old directory is removed.
An interrupted migration is finished by running it again: the renamed directory is still
there and each partition write replaces the same partition.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from malt_lake import schemas
from malt_lake.errors import LakeError
from malt_lake.lake import LEGACY_FILE, Lake
from malt_lake.names import PartitionKey

ASIDE_SUFFIX = ".plain-parquet"


def migrate_plain_parquet(lake: Lake) -> dict[str, int]:
    """Convert every plain-Parquet table; returns the files converted per table."""
    if lake.remote:
        raise LakeError(f"{lake.location} is an object store; only a local warehouse can hold "
                        "the plain Parquet of malt-lake before Delta")
    converted = {}
    for table in schemas.ALL_TABLES:
        directory = lake.tables_dir / table
        aside = lake.tables_dir / f"{table}{ASIDE_SUFFIX}"
        if not aside.exists():
            if (directory / "_delta_log").exists() or not any(directory.rglob(LEGACY_FILE)):
                continue
            directory.rename(aside)
        converted[table] = _convert(lake, table, aside)
        shutil.rmtree(aside)
    return converted


def _convert(lake: Lake, table: str, aside: Path) -> int:
    files = sorted(aside.rglob(LEGACY_FILE))
    for file in files:
        try:
            data = pq.read_table(file)
            if table in schemas.PARTITIONED:
                shard, dataset = file.parent.name, file.parent.parent.name
                key = PartitionKey.from_columns(dataset.removeprefix("dataset="),
                                                shard.removeprefix("shard="))
                lake.write_partition(table, key, data)
            elif table in schemas.BY_DATASET:
                dataset = file.parent.name.removeprefix("dataset=")
                lake.write_dataset_table(table, dataset, data)
            else:
                lake.write_whole_table(table, data)
        except (ValueError, LakeError) as exc:
            raise LakeError(f"cannot convert {file}: {exc}. Delete that table's directory "
                            f"({aside}) and rematerialize `{table}` instead") from exc
    return len(files)
