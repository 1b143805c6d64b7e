"""One version of a lake table as plain files, for tools that do not read Delta.

A Parquet glob over a Delta table's directory would also read the files of replaced versions
(they stay until vacuumed), so a user who wants files hands them to this instead: one Parquet
or JSON Lines file with exactly the rows of the version asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow.dataset as pads

from malt_lake.errors import LakeError
from malt_lake.lake import Lake, atomic_write, partition_columns

Format = Literal["parquet", "jsonl"]


def export_table(lake: Lake, table: str, target: str | Path, *, version: int | None = None,
                 dataset: str | None = None, fmt: Format | None = None) -> tuple[Path, int]:
    """Write ``table`` (at ``version``, latest by default; one dataset's rows if given) to
    ``target``; the format follows the suffix (.parquet, .jsonl) unless ``fmt`` names it.
    Returns the file and its row count. Chat columns (prompt, chosen, ...) stay lists of
    {role, content} messages, TRL's conversational format."""
    target = Path(target).expanduser()
    fmt = fmt or _format_of(target)
    partition_columns(table)  # an unknown table is named as such
    data = lake.dataset(table, version)
    if data is None:
        raise LakeError(f"{table} has not been written yet; nothing to export")
    try:
        rows = data.to_table(filter=None if dataset is None
                             else pads.field("dataset") == dataset)
    except OSError as exc:
        raise LakeError(f"{table} version {version}: a file of it is gone; a version whose "
                        "files were vacuumed cannot be exported") from exc
    if fmt == "parquet":
        atomic_write(rows, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        partial = target.with_name(f".{target.name}.partial")
        frame.write_ndjson(partial)
        partial.replace(target)
    return target, rows.num_rows


def _format_of(target: Path) -> Format:
    if target.suffix == ".parquet":
        return "parquet"
    if target.suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    raise LakeError(f"cannot tell the format of {target}: end it in .parquet or .jsonl, or "
                    "pass --format")
