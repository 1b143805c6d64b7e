"""``materialize --all-train`` as a Dagster backfill: a run per shard, launched by a daemon
under the instance's limits, every run and materialization in the instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill

from assets.concurrency import ACCELERATOR_POOL
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey

CLI = str(Path(sys.executable).parent / "malt-lake")
SHARDS = ("arith.train.0000", "arith.train.0001")


def env_for(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MALT_CONFIG", "MALT_ROUNDS")}
    return {**env, "MALT_WAREHOUSE": str(root), "DAGSTER_HOME": str(root / "dagster"),
            "MALT_ENV": "test", "MALT_FAKE_DELAY_S": "0.3"}


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def backfill_runs(root: Path) -> tuple[PartitionBackfill, list[dg.RunRecord]]:
    """The newest backfill and its runs, oldest first."""
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        backfill = max(instance.get_backfills(), key=lambda b: b.backfill_timestamp)
        records = instance.get_run_records(dg.RunsFilter(tags={
            "dagster/backfill": backfill.backfill_id}))
        return backfill, sorted(records, key=lambda r: r.start_time or 0)


def test_all_train_is_one_backfill_whose_shards_run_side_by_side(tmp_path):
    """A backfill whose runs fail is an error naming the shards and writes nothing; then the
    tree over every train shard, with two accelerator slots so both shards expand at once."""
    root = tmp_path / "warehouse"
    env = env_for(root)
    assert run_cli(env, "ingest").returncode == 0
    proc = run_cli(env, "materialize", "--select", "credit", "--all-train")  # no trees yet
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "runs that did not succeed: arith.train.0000, arith.train.0001" in proc.stderr
    assert "Traceback" not in proc.stderr
    backfill, records = backfill_runs(root)
    assert backfill.status.value != "COMPLETED_SUCCESS"
    assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.FAILURE}
    assert not Lake(root).has_partition("credit", PartitionKey.parse(SHARDS[0]))

    subprocess.run([sys.executable, "-m", "dagster", "instance", "concurrency", "set",
                    ACCELERATOR_POOL, "2"], env=env, check=True, capture_output=True)
    proc = run_cli(env, "materialize", "--select", "tree", "--all-train")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started a Dagster daemon for the backfill" in proc.stdout
    assert "for 2 shard(s)" in proc.stdout

    backfill, records = backfill_runs(root)
    assert backfill.status.value == "COMPLETED_SUCCESS"
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == list(SHARDS)
    assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
    first, second = records
    assert second.start_time < first.end_time  # side by side, not one after the other
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        for asset in ("generations", "refinements", "credit", "dpo_refiner"):
            assert set(SHARDS) <= instance.get_materialized_partitions(dg.AssetKey(asset))
    lake = Lake(root)
    for shard in SHARDS:
        key = PartitionKey.parse(shard)
        assert lake.read_required("refinements", key).num_rows == \
            27 * lake.read_required("questions", key).num_rows


def test_a_run_submitted_for_another_warehouse_writes_nothing(lake, instance, tmp_path):
    """A backfill carries the CLI's warehouse; a daemon whose code location writes another
    one (started with other settings) must not run it there."""
    from assets.concurrency import WAREHOUSE_TAG
    from assets.definitions import ALL_ASSETS
    from tests.resources import asset_resources

    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    result = dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=SHARDS[0],
                            instance=instance, resources=resources, raise_on_error=False,
                            tags={WAREHOUSE_TAG: str(tmp_path / "elsewhere")})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "submitted for the warehouse" in str(failure.step_failure_data.error)
    assert not lake.has_partition("questions", PartitionKey.parse(SHARDS[0]))
    assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=SHARDS[0],
                          instance=instance, resources=resources,
                          tags={WAREHOUSE_TAG: str(lake.location)}).success
