"""Errors a user can act on: each names the thing that is wrong and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass


class MaltLakeError(Exception):
    """Base class: messages are written for the person running the pipeline."""


class ConfigError(MaltLakeError):
    """A setting is missing, malformed or out of range."""


class LakeError(MaltLakeError):
    """The lake cannot be read or written as asked (bad partition key, path escape...)."""


class StaleLineage(LakeError):
    """A partition's tables do not form one tree: a parent changed under its children."""


class QueryRefused(MaltLakeError):
    """A SQL statement the read-only query surface will not run."""


class QueryFailed(MaltLakeError):
    """A read-only statement DuckDB could not run: the user's SQL names a column or table
    that does not exist, has a syntax error, or fails on a value (a cast, a division)."""


class HubUnavailable(MaltLakeError):
    """Something would need the Hugging Face hub and we are offline."""


@dataclass(frozen=True)
class RowProblem:
    """One bad row: where it is and what is wrong with it."""

    source: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source} line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


class DatasetRowError(MaltLakeError):
    """A dataset file has malformed rows. Raised before anything is written."""

    def __init__(self, problems: list[RowProblem], total: int | None = None) -> None:
        self.problems = problems
        total = total if total is not None else len(problems)
        shown = "\n  ".join(str(p) for p in problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"{total} malformed row(s); nothing was written. Fix or remove them:\n  {shown}{more}"
        )
