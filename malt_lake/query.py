"""DuckDB over the lake: one view per table, and a read-only query surface for users."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from malt_lake import schemas
from malt_lake.environment import environment
from malt_lake.errors import LakeError, QueryFailed, QueryRefused
from malt_lake.lake import Lake, partition_columns
from malt_lake.sqlfiles import read_sql

# Views over other views, created after the table views (order matters).
DERIVED_VIEWS = ["views/nodes"]
ANALYTICS_VIEWS = ["analytics/accuracy_by_turn", "analytics/flips", "analytics/positive_rate",
                   "analytics/pairs_per_role", "analytics/truncation"]
READ_ONLY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
VERSIONS = pa.schema([("table_name", pa.string()), ("version", pa.int64()),
                      ("committed_at", pa.timestamp("ms", tz="UTC")),
                      ("operation", pa.string()), ("partition", pa.string()),
                      ("rows", pa.int64()), ("theta", pa.float64())])
# time travel: {table: version} or (table, version) pairs (one table at several versions)
AsOf = Mapping[str, int] | Iterable[tuple[str, int]]


def _pairs(as_of: AsOf | None) -> list[tuple[str, int]]:
    if as_of is None:
        return []
    return list(as_of.items()) if isinstance(as_of, Mapping) else list(as_of)


def connect(lake: Lake, *, sandboxed: bool = False, derived: bool = True,
            tables: Collection[str] | None = None,
            as_of: AsOf | None = None,
            versions_view: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a view per lake table over the Parquet files of its current
    Delta version, so DuckDB prunes partitions and pushes column filters into its own reader
    with no extension to download (typed empty views for tables not yet written).

    ``as_of`` adds ``<table>_v<version>`` beside ``<table>`` for each (table, version) (time
    travel); ``versions_view`` adds ``lake_versions``, every table's commits. ``sandboxed``
    locks file access to the warehouse for user-supplied SQL; ``derived`` adds the views
    over views (nodes, analytics); ``tables`` limits the views to those tables (registering
    an empty Arrow table imports pandas, ~0.3 s in a fresh process, which a statement that
    reads three written tables need not pay)."""
    if tables is not None and derived:
        raise ValueError("derived views read every table; pass derived=False with tables")
    con = duckdb.connect(":memory:")
    con.execute("set enable_progress_bar = false")
    # bounded memory on a shared box: DuckDB spills to disk past this
    con.execute("set memory_limit = $limit",
                {"limit": environment().duckdb_memory_limit})
    for table in schemas.ALL_TABLES:
        if tables is None or table in tables:
            _table_view(con, table, table, _source(lake, table))
    for table, version in _pairs(as_of):
        if table not in schemas.ALL_TABLES:
            raise QueryRefused(f"--as-of names {table!r}, not a lake table "
                               f"({', '.join(sorted(schemas.ALL_TABLES))})")
        source = _source(lake, table, version)
        if source is None:
            raise QueryRefused(f"{table} has not been written yet, so it has no versions")
        _table_view(con, f"{table}_v{version}", table, source)
    if versions_view:  # reads every table's log: only for a query that names the view
        con.register("lake_versions", lake_versions(lake))
    for name in (DERIVED_VIEWS + ANALYTICS_VIEWS) if derived else []:
        con.execute(read_sql(name))
    if sandboxed:
        # a remote lake's views are registered datasets: user SQL needs no file at all
        allowed = [] if lake.remote else [str(lake.root) + "/"]
        con.execute("set allowed_directories = $allowed", {"allowed": allowed})
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    return con


def _source(lake: Lake, table: str, version: int | None = None
            ) -> list[str] | pads.Dataset | None:
    """What a view reads: a local table's Parquet files (DuckDB's own reader), or a remote
    table's Arrow dataset (DuckDB has no S3 client here, and cannot download one)."""
    if lake.remote:
        return lake.dataset(table, version)
    return lake.data_files(table, version)


def _table_view(con: duckdb.DuckDBPyConnection, name: str, table: str,
                files: list[str] | pads.Dataset | None) -> None:
    """``name``: the table's columns in contract order over exactly the Parquet files of one
    Delta version, read by DuckDB's own reader (partition values from the hive paths, so a
    filter on dataset or shard skips whole files; column and row-group filters are pushed
    into the reader). No file yet: a typed empty table. The file list is part of the view's
    text (a view cannot bind parameters); the paths are the lake's own, quotes doubled.
    A remote table comes as the Arrow dataset of its version, registered under
    ``<name>__delta``; DuckDB pushes the same filters into its scanner."""
    schema = schemas.ALL_TABLES[table]
    columns = ", ".join(f'"{c}"' for c in schema.names)
    if isinstance(files, pads.Dataset):
        con.register(f"{name}__delta", files)
        con.execute(f"create view {name} as select {columns} from {name}__delta")
        return
    if not files:
        con.register(name, schema.empty_table())
        return
    hive = partition_columns(table)
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    options = (", hive_partitioning = true, hive_types = {"
               + ", ".join(f"'{c}': 'VARCHAR'" for c in hive) + "}") if hive else ""
    try:
        con.execute(f"create view {name} as select {columns} "
                    f"from read_parquet([{listing}]{options})")
    except duckdb.IOException as exc:
        raise LakeError(f"{name}: a file of this version is gone ({first_line(exc)[:160]}...); "
                        "a version whose files were vacuumed cannot be read (`select * from "
                        "lake_versions` lists the versions)") from exc


def lake_versions(lake: Lake) -> pa.Table:
    """One row per commit of every table: which partition it replaced, with how many rows,
    and (credit, role datasets) at which theta: what ``--as-of`` needs to pick a version."""
    rows = []
    for table in schemas.ALL_TABLES:
        for commit in lake.history(table):
            theta = commit.get("malt.theta")
            rows.append({"table_name": table, "version": commit["version"],
                         "committed_at": commit["timestamp"],
                         "operation": commit["operation"],
                         "partition": commit.get("malt.partition"),
                         "rows": commit.get("malt.rows"),
                         "theta": None if theta is None else float(theta)})
    return pa.Table.from_pylist(rows, schema=VERSIONS)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but SELECT / EXPLAIN, before running any of it."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"cannot parse the query: {first_line(exc)}") from exc
    if not statements:
        raise QueryRefused("empty query")
    if len(statements) > 1:
        raise QueryRefused(f"{len(statements)} statements given; run one query at a time")
    for statement in statements:
        if statement.type not in READ_ONLY_TYPES:
            kind = statement.type.name.lower()
            raise QueryRefused(
                f"refused a {kind} statement: `malt-lake sql` is read-only (SELECT, DESCRIBE, "
                "SUMMARIZE, EXPLAIN). The lake is written only by materializing assets."
            )


def fetch(lake: Lake, name: str, params: dict, *, derived: bool = False) -> pa.Table:
    """Run one of our own SQL files (``sql/<name>.sql``) with bound parameters."""
    con = connect(lake, derived=derived)
    try:
        return con.sql(read_sql(name), params=params).to_arrow_table()
    finally:
        con.close()


def run_read_only(lake: Lake, sql: str, as_of: AsOf | None = None) -> pa.Table:
    """Run user SQL against the lake views, read-only and confined to the warehouse;
    ``as_of`` adds earlier table versions as ``<table>_v<version>``."""
    con = connect(lake, sandboxed=True, as_of=as_of,
                  versions_view="lake_versions" in sql.lower())
    try:
        check_read_only(con, sql)
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise QueryRefused(
                f"{exc}. `malt-lake sql` may only read "
                + ("the lake's views" if lake.remote else f"files under {lake.root}")
            ) from exc
        except OUR_FAULTS:
            raise
        except duckdb.Error as exc:
            hint = _candidates(exc)
            if isinstance(exc, duckdb.BinderException | duckdb.CatalogException):
                hint += '; `malt-lake sql "show tables"` lists the views'
            raise QueryFailed(f"{first_line(exc)}{hint}") from exc
    finally:
        con.close()


# Errors no statement of the user's causes (a DuckDB bug, a broken connection): they keep their
# traceback. Any other DuckDB error (binder, parser, catalog, conversion, a file the query names
# that is not there, a corrupt lake file) is one line and exit 2.
OUR_FAULTS = (duckdb.InternalException, duckdb.FatalException)


def first_line(exc: Exception) -> str:
    """DuckDB's message without the lines under it (the query echoed, a caret)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))


def _candidates(exc: Exception) -> str:
    """DuckDB's "Candidate bindings"/"Did you mean" line, which names what does exist."""
    for line in str(exc).splitlines()[1:]:
        if line.strip().startswith(("Candidate", "Did you mean")):
            return f" ({line.strip()})"
    return ""

