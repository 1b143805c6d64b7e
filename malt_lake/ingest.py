"""Questions into the lake: the shard catalog and one shard's question rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from malt_lake import schemas
from malt_lake.datasets import LoadedSplit, load_split
from malt_lake.errors import LakeError, RowProblem
from malt_lake.lake import Lake, Written
from malt_lake.names import PartitionKey
from malt_lake.settings import ProjectSettings


@dataclass
class Catalog:
    """Every (dataset, shard) partition the configured datasets have, and what was skipped."""

    shards: pl.DataFrame
    skipped: list[RowProblem]

    @property
    def partition_keys(self) -> list[str]:
        return self.shards.get_column("partition_key").to_list()


def build_catalog(settings: ProjectSettings) -> Catalog:
    """Validate every configured split (all before any write) and cut it into shards."""
    rows: list[dict] = []
    skipped: list[RowProblem] = []
    for spec in settings.datasets:
        for split in spec.splits:
            loaded = load_split(spec, split)
            skipped.extend(loaded.skipped)
            rows.extend(_shard_rows(loaded, spec.shard_size))
    frame = pl.DataFrame(rows, schema={
        "dataset": pl.String, "split": pl.String, "shard": pl.String,
        "partition_key": pl.String, "n_questions": pl.Int64, "first_row": pl.Int64,
        "source": pl.String, "source_sha256": pl.String, "n_skipped_rows": pl.Int64,
    })
    return Catalog(frame, skipped)


def _shard_rows(loaded: LoadedSplit, shard_size: int) -> list[dict]:
    total = loaded.frame.height
    out = []
    for index in range(math.ceil(total / shard_size)):
        key = PartitionKey(loaded.dataset, loaded.split, index)
        first = index * shard_size
        out.append({
            "dataset": key.dataset, "split": key.split, "shard": key.shard,
            "partition_key": key.key, "n_questions": min(shard_size, total - first),
            "first_row": first, "source": loaded.source, "source_sha256": loaded.sha256,
            "n_skipped_rows": len(loaded.skipped),
        })
    return out


def write_catalog(lake: Lake, catalog: Catalog) -> Written:
    """Commit the shard catalog, unless the lake holds this very catalog already: every
    ingest starts here, and an unchanged catalog is not worth a table version."""
    shards = schemas.conform(catalog.shards.to_arrow(), schemas.SHARDS).sort_by("partition_key")
    stored = lake.read_whole_table("shards")
    if stored is not None and stored.sort_by("partition_key").equals(shards):
        return Written("shards", lake.table_uri("shards"), lake.version("shards") or 0,
                       shards.num_rows, skipped=True)
    return lake.write_whole_table("shards", shards)


def shard_questions(lake: Lake, settings: ProjectSettings, key: PartitionKey) -> pa.Table:
    """The question rows of one partition, checked against the catalog it was planned from."""
    spec = settings.dataset(key.dataset)
    if key.split not in spec.splits:
        raise LakeError(f"dataset {key.dataset!r} has no split {key.split!r} in the config")
    planned = _catalog_row(lake, key)
    loaded = load_split(spec, key.split)
    if loaded.sha256 != planned["source_sha256"]:
        raise LakeError(
            f"the source of {key} changed since the shard catalog was built; rematerialize "
            "`dataset_catalog` (malt-lake ingest) so shard boundaries match the new data"
        )
    frame = loaded.frame.slice(planned["first_row"], planned["n_questions"])
    return frame.with_columns(
        pl.lit(key.dataset).alias("dataset"), pl.lit(key.shard).alias("shard")
    ).to_arrow()


def _catalog_row(lake: Lake, key: PartitionKey) -> dict:
    table = lake.read_whole_table("shards")
    if table is not None:
        for row in pl.from_arrow(table).filter(pl.col("partition_key") == key.key).to_dicts():
            return row
    raise LakeError(
        f"partition {key} is not in the shard catalog; materialize `dataset_catalog` first "
        "(malt-lake ingest)"
    )
