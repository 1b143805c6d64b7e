"""Credit assignment and role datasets: SQL over the lake, never a model call.

Changing theta re-runs only these statements over stored rewards, in seconds.
"""

from __future__ import annotations

import math

import pyarrow as pa

from malt_lake.errors import ConfigError
from malt_lake.lake import Lake
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


def compute_credit(lake: Lake, key: PartitionKey, theta: float) -> pa.Table:
    """One row per tree node of the partition: value, label at theta, valued children."""
    theta = validate_theta(theta)
    con = connect(lake)
    try:
        return con.sql(read_sql("credit/credit"), params={
            "dataset": key.dataset, "shard": key.shard, "theta": theta,
        }).to_arrow_table()
    finally:
        con.close()


def role_datasets(lake: Lake, key: PartitionKey) -> dict[str, pa.Table]:
    """SFT positives and DPO sibling pairs of every role, from the partition's credit."""
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


CHECKS = {
    "tree_completeness": "checks/tree_completeness",
    "credit_consistency": "checks/credit_consistency",
    "dpo_pairs": "checks/dpo_pairs",
}


def check_partition(lake: Lake, key: PartitionKey, check: str) -> pa.Table:
    """Rows that violate one contract check (empty = the check passes)."""
    con = connect(lake)
    try:
        return con.sql(read_sql(CHECKS[check]), params={
            "dataset": key.dataset, "shard": key.shard,
        }).to_arrow_table()
    finally:
        con.close()
