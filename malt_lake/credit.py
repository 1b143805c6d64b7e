"""Credit assignment and role datasets: SQL over the lake, never a model call.

Changing theta re-runs only these statements over stored rewards, in seconds.
"""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa

from malt_lake.errors import ConfigError, LakeError, StaleLineage
from malt_lake.lake import Lake, Written
from malt_lake.names import PartitionKey
from malt_lake.query import connect
from malt_lake.schemas import DPO_TABLES, SFT_TABLES
from malt_lake.sqlfiles import read_sql

DEFAULT_THETA = 0.5


def validate_theta(theta: object) -> float:
    """theta must be a number strictly inside (0, 1): at 0 or 1 every label is the same."""
    if isinstance(theta, bool) or not isinstance(theta, int | float | str):
        raise ConfigError(f"theta must be a number in (0, 1), got {theta!r}")
    try:
        value = float(theta)
    except ValueError:
        raise ConfigError(f"theta must be a number in (0, 1), got {theta!r}") from None
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise ConfigError(f"theta must be strictly between 0 and 1, got {theta!r}; the paper "
                          "uses 0.5")
    return value


def _credit_relation(lake: Lake, key: PartitionKey, theta: float
                     ) -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]:
    """The credit statement for one partition, checked and bound (caller closes the con)."""
    theta = validate_theta(theta)
    _require(lake, key, ["generations", "critiques", "refinements", "leaf_rewards"])
    _require_columns(lake, key, "leaf_rewards", ["r_idx"])
    con = connect(lake, derived=False, tables=CREDIT_INPUTS)
    return con, credit_relation(con, key, theta)


CREDIT_INPUTS = ("generations", "critiques", "leaf_rewards")


def credit_relation(con: duckdb.DuckDBPyConnection, key: PartitionKey,
                    theta: float) -> duckdb.DuckDBPyRelation:
    """The two credit statements on a connection with the input views: the verifier level
    is written to a temp table (``sql/credit/verifier_values.sql``), then the node rows are a
    relation over it (``sql/credit/credit.sql``)."""
    partition = {"dataset": key.dataset, "shard": key.shard}
    con.execute("set preserve_insertion_order = false")  # rows come in no particular order
    con.execute(read_sql("credit/verifier_values"), partition)
    return con.sql(read_sql("credit/credit"), params={**partition, "theta": theta})


def compute_credit(lake: Lake, key: PartitionKey, theta: float) -> pa.Table:
    """One row per tree node of the partition: value, label at theta, valued children."""
    con, relation = _credit_relation(lake, key, theta)
    try:
        return relation.to_arrow_table()
    finally:
        con.close()


def compute_credit_to_lake(lake: Lake, key: PartitionKey, theta: float, *,
                           check_lineage: bool = True, write_id: str | None = None) -> Written:
    """Compute and commit the partition's credit as a new version of the credit table (its
    theta in the commit); DuckDB writes the Parquet itself, so memory stays bounded at any
    partition size. Refuses a
    partition whose tables do not belong to one tree (``require_fresh_lineage``) unless
    ``check_lineage`` is off (for callers that checked it already)."""
    theta = validate_theta(theta)  # a bad theta is named first, whatever the lake holds
    if check_lineage:
        require_fresh_lineage(lake, key)
    con, relation = _credit_relation(lake, key, theta)
    try:
        relation.create_view("credit_result")
        return lake.write_partition_with(
            "credit", key,
            lambda temp: con.execute(read_sql("credit/write"), {"path": str(temp)}),
            write_id=write_id, info={"malt.theta": str(theta)})
    finally:
        con.close()


def role_datasets(lake: Lake, key: PartitionKey) -> dict[str, pa.Table]:
    """SFT positives and DPO sibling pairs of every role, from the partition's credit. Leaves
    out the noise ``role_dataset_drops`` counts: a positive whose exact text a negative
    sibling also wrote, and a pair whose chosen and rejected texts are equal."""
    _require(lake, key, ["credit"])
    con = connect(lake)
    params = {"dataset": key.dataset, "shard": key.shard}
    try:
        out = {}
        for table, role in SFT_TABLES.items():
            out[table] = con.sql(read_sql("roles/sft"), params={**params, "role": role}
                                 ).to_arrow_table()
        for table, role in DPO_TABLES.items():
            out[table] = con.sql(read_sql("roles/dpo"), params={**params, "role": role}
                                 ).to_arrow_table()
        return out
    finally:
        con.close()


def role_dataset_drops(lake: Lake, key: PartitionKey) -> pa.Table:
    """Per role (one row each): the SFT positives and the DPO pairs ``role_datasets`` left
    out of the partition because a positive and a negative sibling wrote the same text
    (columns ``sft_dropped_equal_text``, ``dpo_dropped_equal_text``), so the UI shows them."""
    _require(lake, key, ["credit"])
    con = connect(lake)
    try:
        return con.sql(read_sql("roles/dropped"), params={
            "dataset": key.dataset, "shard": key.shard}).to_arrow_table()
    finally:
        con.close()


def _require(lake: Lake, key: PartitionKey, tables: list[str]) -> None:
    missing = [t for t in tables if not lake.has_partition(t, key)]
    if missing:
        raise LakeError(f"partition {key} has no {', '.join(missing)} yet; materialize "
                        f"{' and '.join(f'`{m}`' for m in missing)} for it first")


def _require_columns(lake: Lake, key: PartitionKey, table: str, columns: list[str]) -> None:
    """A partition with nulls in ``columns`` is named, not read: credit would give the
    parents of those rows a null value."""
    data = lake.read_required(table, key, columns)
    for column in columns:  # a null index would leave its parent without a value carrier
        nulls = data.column(column).null_count
        if nulls:
            raise LakeError(f"partition {key}: {table} has {nulls} row(s) without {column}; "
                            f"rematerialize `{table}` for it")


def require_fresh_lineage(lake: Lake, key: PartitionKey) -> None:
    """Raise if any row of the partition's tree was made for a parent that changed since
    (e.g. critiques rematerialized without refinements): credit over it would be silently
    wrong. Names the tables to rematerialize."""
    _require(lake, key, ["questions", "generations", "critiques", "refinements",
                         "leaf_rewards"])
    stale = check_partition(lake, key, "lineage")
    if stale.num_rows:
        tables = sorted(set(stale.column("table_name").to_pylist()))
        first = stale.slice(0, 1).to_pylist()[0]
        raise StaleLineage(
            f"partition {key}: {stale.num_rows} row(s) of {', '.join(tables)} were made for "
            f"parents that changed since (e.g. {first['table_name']} {first['node_id']}: "
            f"{first['problem']}); rematerialize {', '.join(f'`{t}`' for t in tables)} and "
            "what follows them before credit")


CHECKS = {
    "lineage": "checks/lineage",
    "tree_completeness": "checks/tree_completeness",
    "credit_consistency": "checks/credit_consistency",
    "dpo_pairs": "checks/dpo_pairs",
}


def check_partition(lake: Lake, key: PartitionKey, check: str, role: str | None = None
                    ) -> pa.Table:
    """Rows that violate one contract check (empty = the check passes). ``dpo_pairs`` takes
    the role whose pairs to check."""
    con = connect(lake)
    try:
        params = {"dataset": key.dataset, "shard": key.shard}
        if role is not None:
            params["role"] = role
        return con.sql(read_sql(CHECKS[check]), params=params).to_arrow_table()
    finally:
        con.close()


def value_histogram(credit: pa.Table, bins: int = 10) -> pa.Table:
    """Counts of node values per role in ``bins`` equal buckets of [0, 1] (for the UI)."""
    con = duckdb.connect(":memory:")
    try:
        con.register("credit_rows", credit)
        return con.sql(read_sql("analytics/value_histogram"), params={"bins": bins}
                       ).to_arrow_table()
    finally:
        con.close()

