"""Small tables as Markdown, for Dagster metadata and reports."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa


def to_markdown(frame: pl.DataFrame | pa.Table, max_cell: int = 80) -> str:
    frame = frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(v, max_cell) for v in row) + " |"
            for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])


def _cell(value: Any, max_cell: int) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= max_cell else text[: max_cell - 3] + "..."
