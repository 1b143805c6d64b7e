"""Access to the project's ``sql/`` files: one statement per file, parameters bound."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from malt_lake.errors import ConfigError

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


@cache
def read_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (name like ``views/questions``)."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise ConfigError(f"missing SQL file {path}; is malt-lake installed from its repository?")
    return path.read_text(encoding="utf-8")


def sql_path(name: str) -> Path:
    return SQL_DIR / f"{name}.sql"
