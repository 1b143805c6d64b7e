"""Read raw rows from JSONL or Parquet, remembering the line each came from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from malt_lake.errors import ConfigError, RowProblem


@dataclass(frozen=True)
class RawRow:
    line: int
    data: dict[str, Any] | None
    problem: RowProblem | None = None


def read_rows(path: str | Path) -> Iterator[RawRow]:
    """Rows of a .jsonl or .parquet file; bad lines come back as problems. Checks the file
    eagerly, yields rows lazily."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"dataset file {file} does not exist; check the path in your config")
    if file.suffix == ".parquet":
        return _parquet_rows(file)
    if file.suffix in {".jsonl", ".json", ".ndjson"}:
        return _jsonl_rows(file)
    else:
        raise ConfigError(f"dataset file {file}: unsupported extension; use .jsonl or .parquet")


def _jsonl_rows(file: Path) -> Iterator[RawRow]:
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(number, None, RowProblem(
                    str(file), number, None,
                    f"not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"))
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRow(number, None, RowProblem(
                    str(file), number, None, f"bad JSON: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(data, dict):
                yield RawRow(number, None, RowProblem(
                    str(file), number, None,
                    f"expected a JSON object, got {type(data).__name__}"))
                continue
            yield RawRow(number, data)


def _parquet_rows(file: Path) -> Iterator[RawRow]:
    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ConfigError(f"dataset file {file} is not readable Parquet: {exc}") from exc
    for index, row in enumerate(table.to_pylist(), start=1):
        yield RawRow(index, row)
