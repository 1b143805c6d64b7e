"""Access to the project's ``sql/`` files: one statement per file, parameters bound.

The files live at the repository's top level (``sql/``); ``malt_lake/sql`` links to them, so
a source checkout reads them in place and a wheel carries a copy inside the package."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from malt_lake.errors import ConfigError

SQL_DIR = Path(__file__).parent / "sql"


@cache
def read_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (name like ``views/questions``)."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise ConfigError(f"missing SQL file {path}; this malt-lake install is incomplete "
                          "(reinstall it; a wheel carries malt_lake/sql)")
    return path.read_text(encoding="utf-8")


def sql_path(name: str) -> Path:
    return SQL_DIR / f"{name}.sql"
