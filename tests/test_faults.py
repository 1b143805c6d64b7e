"""Faults with real processes: kill -9 mid-generation, rerun, compare with a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from malt_lake.lake import Lake
from malt_lake.names import PartitionKey

CLI = str(Path(sys.executable).parent / "malt-lake")
KEY = "arith.train.0000"


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=300)


def env_for(root: Path, delay: float) -> dict:
    return {**os.environ, "MALT_WAREHOUSE": str(root), "DAGSTER_HOME": str(root / "dagster"),
            "MALT_ENV": "test", "MALT_FAKE_DELAY_S": str(delay)}


def test_kill_9_mid_generation_then_rerun_equals_uninterrupted_run(tmp_path):
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    args = ["materialize", "--select", "expansion", "--partition", KEY, "--batch-prompts", "4",
            "--n", "2"]
    for root in (killed_root, clean_root):
        assert run_cli(env_for(root, 0), "ingest").returncode == 0

    env = env_for(killed_root, 0.4)
    proc = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = killed_root / "checkpoints" / "critiques"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.rglob("batch-*.parquet")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through the verifier's batches
    proc.wait()
    assert list(checkpoints.rglob("batch-*.parquet")), "the run never reached a checkpoint"
    key = PartitionKey.parse("arith.train.0000")
    assert not Lake(killed_root).has_partition("critiques", key)  # nothing half-written

    rerun = run_cli(env_for(killed_root, 0), *args)
    assert rerun.returncode == 0, rerun.stderr
    clean = run_cli(env_for(clean_root, 0), *args)
    assert clean.returncode == 0, clean.stderr
    for table, id_column in [("generations", "g_id"), ("critiques", "v_id"),
                             ("refinements", "r_id")]:
        resumed = Lake(killed_root).read_required(table, key)
        fresh = Lake(clean_root).read_required(table, key)
        ids = resumed.column(id_column).to_pylist()
        assert len(ids) == len(set(ids)) == fresh.num_rows
        assert resumed.equals(fresh), table
    assert not list((killed_root / "checkpoints").rglob("batch-*.parquet"))  # cleaned up
