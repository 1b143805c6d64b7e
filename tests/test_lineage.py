"""No stale subtrees: every row carries its parent's fingerprint, credit refuses a partition
whose parents changed under their children, and Dagster shows the children as stale."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from assets.definitions import ALL_ASSETS
from malt_lake.credit import check_partition, compute_credit_to_lake
from malt_lake.errors import StaleLineage
from malt_lake.lineage import node_fingerprint
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from tests.resources import asset_resources
from tests.trees import WORKED, write_trees

KEY = PartitionKey("toy", "train", 0)
Q = "toy:q0"


def regenerate(lake, table: str, node_id: str, id_column: str) -> None:
    """Rewrite one row of ``table`` as a rematerialization with a new text would."""
    rows = lake.read_required(table, KEY).to_pylist()
    for row in rows:
        if row[id_column] == node_id:
            row["text"] = "a different sample"
            row["fingerprint"] = node_fingerprint(row["parent_fingerprint"], row["text"], None)
    lake.write_partition(table, KEY, pa.Table.from_pylist(
        rows, schema=lake.read_required(table, KEY).schema))


def test_a_fresh_tree_has_no_stale_rows_and_credit_runs(lake):
    write_trees(lake, KEY, {Q: WORKED})
    assert check_partition(lake, KEY, "lineage").num_rows == 0
    assert compute_credit_to_lake(lake, KEY, 0.5).rows == 36


def test_regenerated_critique_makes_its_refinements_stale_and_credit_refuses(lake):
    write_trees(lake, KEY, {Q: WORKED})
    regenerate(lake, "critiques", f"{Q}/g0/v1", "v_id")
    stale = check_partition(lake, KEY, "lineage").to_pylist()
    assert {(r["table_name"], r["node_id"]) for r in stale} == {
        ("refinements", f"{Q}/g0/v1/r{i}") for i in range(3)}
    with pytest.raises(StaleLineage, match="rematerialize `refinements`"):
        compute_credit_to_lake(lake, KEY, 0.5)
    assert not lake.has_partition("credit", KEY)  # nothing written


def test_rewards_of_an_older_refinement_are_stale(lake):
    write_trees(lake, KEY, {Q: WORKED})
    regenerate(lake, "refinements", f"{Q}/g2/v0/r1", "r_id")
    stale = check_partition(lake, KEY, "lineage").to_pylist()
    assert [(r["table_name"], r["node_id"]) for r in stale] == [
        ("leaf_rewards", f"{Q}/g2/v0/r1")]
    # and a refinement with no reward row at all
    leaves = lake.read_required("leaf_rewards", KEY)
    lake.write_partition("leaf_rewards", KEY, leaves.filter(
        pc.not_equal(leaves.column("r_id"), f"{Q}/g0/v0/r0")))
    problems = {r["node_id"]: r["problem"]
                for r in check_partition(lake, KEY, "lineage").to_pylist()}
    assert problems[f"{Q}/g0/v0/r0"] == "no reward row for this refinement"


def test_rematerialized_critiques_block_credit_and_show_as_stale(lake, instance):
    """Through Dagster: after critiques are regenerated (another seed) without refinements,
    the refinements are stale in Dagster's eyes and credit refuses to run."""
    resources = asset_resources(lake)
    key = "arith.train.0000"
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    tree = ["questions", "generations", "critiques", "refinements", "leaf_rewards", "credit"]
    assert dg.materialize(ALL_ASSETS, selection=tree, partition_key=key, instance=instance,
                          resources=resources).success
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    assert resolver.get_status(dg.AssetKey("refinements"), key) == StaleStatus.FRESH
    # the same critiques again (same seed, same texts): same data version, nothing stale
    assert dg.materialize(ALL_ASSETS, selection=["critiques"], partition_key=key,
                          instance=instance, resources=resources).success
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    assert resolver.get_status(dg.AssetKey("refinements"), key) == StaleStatus.FRESH
    assert check_partition(lake, PartitionKey.parse(key), "lineage").num_rows == 0

    assert dg.materialize(ALL_ASSETS, selection=["critiques"], partition_key=key,
                          instance=instance, resources=resources, run_config={"ops": {
                              "critiques": {"config": {"seed": 1}}}}).success
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    assert resolver.get_status(dg.AssetKey("refinements"), key) == StaleStatus.STALE
    result = dg.materialize(ALL_ASSETS, selection=["credit"], partition_key=key,
                            instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "were made for parents that changed since" in str(failure.step_failure_data.error)
    # regenerating what follows the critiques mends it
    assert dg.materialize(ALL_ASSETS, selection=["refinements", "leaf_rewards", "credit"],
                          partition_key=key, instance=instance, resources=resources).success
    checks = run_read_only(lake, "select count(*) n from credit").to_pylist()[0]["n"]
    assert checks > 0
