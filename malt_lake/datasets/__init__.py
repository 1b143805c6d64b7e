"""Dataset loading: every configured split becomes validated, normalized question rows.

Validation runs over the whole split before anything is returned, so a malformed row stops
the load with its file, line and field named, and nothing downstream is half-written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from malt_lake.datasets import arithmetic
from malt_lake.datasets.hub import hub_rows
from malt_lake.datasets.layouts import RowInvalid, normalize
from malt_lake.datasets.readers import RawRow, read_rows
from malt_lake.errors import DatasetRowError, RowProblem
from malt_lake.lineage import question_fingerprint
from malt_lake.settings import ArithmeticSource, DatasetSpec, FileSource, HubSource

MAX_REPORTED_PROBLEMS = 20

QUESTION_COLUMNS = {
    "question_id": pl.String, "split": pl.String, "row_index": pl.Int64,
    "question": pl.String,
    "choices": pl.List(pl.Struct({"label": pl.String, "text": pl.String})),
    "answer": pl.String, "solution": pl.String, "family": pl.String, "source": pl.String,
    "stratum": pl.String, "fingerprint": pl.String,
}


@dataclass
class LoadedSplit:
    """One split, validated: its rows in source order plus what was skipped."""

    dataset: str
    split: str
    frame: pl.DataFrame
    source: str
    sha256: str
    skipped: list[RowProblem] = field(default_factory=list)


def load_split(spec: DatasetSpec, split: str) -> LoadedSplit:
    """Load and validate one split of ``spec``."""
    source = spec.splits[split]
    if isinstance(source, ArithmeticSource):
        return _arithmetic_split(spec, split, source)
    if isinstance(source, FileSource):
        label = source.path
        rows = read_rows(source.path)
        digest = _file_sha256(Path(source.path))
    else:
        assert isinstance(source, HubSource)
        label = f"hub:{source.name}/{source.config or 'default'}/{source.split}"
        rows = hub_rows(source)
        digest = hashlib.sha256(label.encode()).hexdigest()
    return _validated_split(spec, split, source, rows, label, digest)


def _validated_split(spec: DatasetSpec, split: str, source: FileSource | HubSource,
                     rows, label: str, digest: str) -> LoadedSplit:
    records: list[dict] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for raw in rows:
        if source.limit is not None and len(records) >= source.limit:
            break
        problem, record = _one_row(spec, split, source.layout, raw, label, seen)
        if problem is not None:
            problems.append(problem)
        else:
            record["row_index"] = len(records)
            records.append(record)
    if problems and spec.bad_rows == "error":
        raise DatasetRowError(problems[:MAX_REPORTED_PROBLEMS], total=len(problems))
    return LoadedSplit(spec.name, split, _frame(records), label, digest, problems)


def _one_row(spec: DatasetSpec, split: str, layout: str, raw: RawRow, label: str,
             seen: dict[str, int]) -> tuple[RowProblem | None, dict]:
    if raw.problem is not None:
        return raw.problem, {}
    try:
        row = normalize(raw.data, layout, spec.family)
    except RowInvalid as exc:
        return RowProblem(label, raw.line, exc.field, str(exc)), {}
    if len(row.question) > spec.max_question_chars:
        return RowProblem(label, raw.line, "question",
                          f"{len(row.question)} characters, over max_question_chars="
                          f"{spec.max_question_chars}"), {}
    raw_id = row.raw_id if row.raw_id is not None else f"{split}-{raw.line:06d}"
    if raw_id in seen:
        return RowProblem(label, raw.line, "id",
                          f"duplicate id {raw_id!r} (first on line {seen[raw_id]})"), {}
    seen[raw_id] = raw.line
    return None, {
        "question_id": f"{spec.name}:{raw_id}", "split": split, "question": row.question,
        "choices": row.choices, "answer": row.answer, "solution": row.solution,
        "family": spec.family, "source": f"{label}:{raw.line}", "stratum": row.stratum,
        "fingerprint": question_fingerprint(row.question, row.choices, row.answer),
    }


def _arithmetic_split(spec: DatasetSpec, split: str, source: ArithmeticSource) -> LoadedSplit:
    knobs = source.model_dump_json()
    records = [
        {
            "question_id": f"{spec.name}:{split}-{p.index:06d}", "split": split,
            "row_index": p.index, "question": p.question, "choices": None,
            "answer": str(p.answer), "solution": p.solution, "family": spec.family,
            "source": f"builtin:arithmetic:{p.index}", "stratum": None,
            "fingerprint": question_fingerprint(p.question, None, str(p.answer)),
        }
        for p in arithmetic.generate(source)
    ]
    return LoadedSplit(spec.name, split, _frame(records), f"builtin:arithmetic {knobs}",
                       hashlib.sha256(knobs.encode()).hexdigest())


def _frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=QUESTION_COLUMNS)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
