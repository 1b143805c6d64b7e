"""deploy/dagster.yaml for real: a throwaway PostgreSQL 15 server, one instance in it, two
worker processes, each with a directory of its own as on two machines, materializing
different shards at once through the CLI into one lake in an S3 bucket (moto's server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from tests.ports import free_port
from tests.s3 import object_keys

REPO = Path(__file__).resolve().parents[1]
CLI = str(REPO / ".venv" / "bin" / "malt-lake")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARDS = ("arith.train.0000", "arith.train.0001")
TREE = ("questions", "generations", "critiques", "refinements", "generation_rewards",
        "leaf_rewards", "credit")


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL 15 server on 127.0.0.1 in a temp directory, as the postgres user when
    this runs as root (initdb refuses root); its connection as MALT_PG_* variables."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL 15 server at {PG_BIN}")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="malt-pg-"))
    if as_postgres:
        shutil.chown(home, "postgres")
    data, port = home / "data", free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "malt", "--auth=trust")
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "-o",
           f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
        pg(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "malt", "malt")
        yield {"MALT_PG_HOST": "127.0.0.1", "MALT_PG_PORT": str(port), "MALT_PG_USER": "malt",
               "MALT_PG_PASSWORD": "", "MALT_PG_DB": "malt"}
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_on_one_postgres_instance_and_one_s3_lake_lose_nothing(
        tmp_path, postgres, s3_env):
    import dagster as dg

    home, warehouse = tmp_path / "dagster", s3_env["MALT_WAREHOUSE"]
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {**{k: v for k, v in os.environ.items() if k not in ("MALT_CONFIG", "MALT_ROUNDS")},
           **postgres, "DAGSTER_HOME": str(home), "MALT_ENV": "test",
           "MALT_FAKE_DELAY_S": "0.05"}
    ingest = subprocess.run([CLI, "ingest"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    os.environ.update(postgres)  # the instance's config reads them
    try:  # the pool's row exists before the workers fan out (they would race to create it)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert "malt_accelerator" in instance.event_log_storage.get_concurrency_keys()
    finally:
        for name in postgres:
            os.environ.pop(name, None)

    workers = [subprocess.Popen([CLI, "materialize", "--select", "tree", "--partition", shard],
                                env={**env, "MALT_WORK_DIR": str(tmp_path / f"machine-{i}")},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i, shard in enumerate(SHARDS)]
    outcomes = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outcomes, strict=True):
        assert worker.returncode == 0, stderr

    os.environ.update(postgres)  # the instance's config reads them
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            runs = instance.get_runs(dg.RunsFilter(job_name="tree"))
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(SHARDS)
            assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
            assert len({r.tags["malt/pid"] for r in runs}) == 2  # two worker processes
            first, second = sorted(instance.get_run_records(dg.RunsFilter(job_name="tree")),
                                   key=lambda record: record.start_time)
            assert second.start_time < first.end_time  # at once, not one after the other
            for asset in TREE:
                materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
                assert set(SHARDS) <= materialized, asset
            info = instance.event_log_storage.get_concurrency_info("malt_accelerator")
            assert info.slot_count == 1 and info.active_slot_count == 0
    finally:
        for name in postgres:
            os.environ.pop(name, None)
    lake = Lake(warehouse)
    for shard in SHARDS:
        key = PartitionKey.parse(shard)
        for table in TREE:
            assert lake.has_partition(table, key), (table, shard)
        leaves = lake.read_partition("refinements", key)
        assert leaves.num_rows == 27 * lake.read_partition("questions", key).num_rows
    for shard in SHARDS:  # both workers' commits are in the bucket, no local table anywhere
        key = PartitionKey.parse(shard)
        assert any(f"lake/refinements/dataset={key.dataset}/shard={key.shard}/" in k
                   for k in object_keys(s3_env, "lake/refinements/")), shard
    assert not list(tmp_path.glob("machine-*/lake"))
