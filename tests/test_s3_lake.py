"""The whole graph with its warehouse in an object store (``MALT_WAREHOUSE=s3://...``),
against a real S3 HTTP server (moto's server mode on 127.0.0.1), and kill -9 in a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from malt_lake.training.store import AdapterStore
from tests.resources import asset_resources
from tests.s3 import object_keys
from tests.test_reliability import whole_graph

CLI = str(Path(sys.executable).parent / "malt-lake")
KEY = "arith.train.0000"
TINY_RECIPE = ('base_model = "embedded"\n[sft]\nmax_steps = 1\nmin_rows = 1\n'
               '[dpo]\nmax_steps = 1\nmin_rows = 1\n')


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env={**os.environ, "MALT_ENV": "test", **env},
                          capture_output=True, text=True, timeout=600, check=False)


def test_whole_graph_on_s3_equals_the_local_run(s3_env, tmp_path, monkeypatch):
    """Ingest, expansion (fake backend), rewards, credit, role datasets, training (the
    embedded model, one step a stage, reading its rows from S3) and evaluation: every table,
    adapter and report lands in the bucket (this machine's directory keeps the Dagster
    instance, locks and copies of adapters and reports), and the ids equal a local run's."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    s3_lake = Lake(s3_env["MALT_WAREHOUSE"])
    assert s3_lake.remote and s3_lake.root.is_relative_to(tmp_path / "work")
    with dg.instance_for_test() as instance:
        on_s3 = whole_graph(s3_lake, instance, asset_resources(s3_lake, recipe=recipe))

    keys = object_keys(s3_env)
    for table in ("questions", "generations", "critiques", "refinements", "credit",
                  "sft_refiner", "dpo_refiner", "eval_predictions"):
        assert f"lake/{table}/_delta_log/00000000000000000000.json" in keys, table
    version = on_s3["adapters"][2]
    assert f"adapters/arith/refiner/{version}/adapter_model.safetensors" in keys
    assert f"adapters/arith/refiner/{version}/manifest.json" in keys
    assert "adapters/arith/refiner/CURRENT" in keys
    assert {"reports/eval-arith.md", "reports/eval-arith.png"} <= set(keys)
    assert not [k for k in keys if k.startswith("checkpoints/") and not k.endswith("/")]
    assert not (s3_lake.root / "lake").exists() and not (s3_lake.root / "checkpoints").exists()

    # another machine (an empty directory of its own) reads the same adapters from S3
    monkeypatch.setenv("MALT_WORK_DIR", str(tmp_path / "other-machine"))
    other = AdapterStore(Lake(s3_env["MALT_WAREHOUSE"]), "arith").current("refiner")
    assert other is not None and other.is_relative_to(tmp_path / "other-machine")
    assert other.name == version and (other / "adapter_model.safetensors").is_file()

    local_root = tmp_path / "local"
    for name in s3_env:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MALT_WAREHOUSE", str(local_root))
    local_lake = Lake(local_root)
    with dg.instance_for_test() as instance:
        local = whole_graph(local_lake, instance, asset_resources(local_lake, recipe=recipe))
    assert on_s3 == local


def test_sql_on_s3_pushes_filters_into_the_scan_and_stays_read_only(s3_env):
    assert run_cli(s3_env, "ingest").returncode == 0
    made = run_cli(s3_env, "materialize", "--select", "tree", "--partition", KEY)
    assert made.returncode == 0, made.stderr
    lake = Lake(s3_env["MALT_WAREHOUSE"])
    plan = "\n".join(run_read_only(lake, "explain select value from credit where shard = "
                                   "'0000' and role = 'refiner'").column(1).to_pylist())
    assert "ARROW_SCAN" in plan and "\"shard\" = '0000'" in plan, plan
    assert "Projections: value" in plan or "Projections: role" in plan, plan
    counts = run_read_only(lake, "select role, count(*) n from credit group by all "
                                 "order by role").to_pylist()
    assert counts == [{"role": "generator", "n": 48}, {"role": "refiner", "n": 27 * 16},
                      {"role": "verifier", "n": 144}]
    instance_file = Path(s3_env["DAGSTER_HOME"]) / "dagster.yaml"
    assert instance_file.is_file()
    for path in ("/etc/hostname", str(instance_file)):  # this machine's files: none
        refused = run_cli(s3_env, "sql", f"select * from read_text('{path}')")
        assert refused.returncode == 2 and "may only read the lake's views" in refused.stderr


def test_kill_9_mid_generation_on_s3_resumes_on_another_machine(s3_env, tmp_path):
    """The checkpoints live in the bucket: a run killed mid-way leaves the table unwritten,
    and a rerun from another machine's directory resumes from them, giving the rows of an
    uninterrupted run."""
    args = ["materialize", "--select", "expansion", "--partition", KEY, "--batch-prompts", "4",
            "--n", "2"]
    assert run_cli(s3_env, "ingest").returncode == 0
    proc = subprocess.Popen([CLI, *args], env={**os.environ, "MALT_ENV": "test",
                                               "MALT_FAKE_DELAY_S": "0.4"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not [
            k for k in object_keys(s3_env, "checkpoints/critiques/") if "batch-" in k]:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    batches = [k for k in object_keys(s3_env, "checkpoints/critiques/") if "batch-" in k]
    assert batches, "the run never reached a checkpoint"
    key = PartitionKey.parse(KEY)
    assert not Lake(s3_env["MALT_WAREHOUSE"]).has_partition("critiques", key)

    # a machine of its own directory; the instance is shared, as Postgres would be
    other = {**s3_env, "MALT_WORK_DIR": str(tmp_path / "other-machine"),
             "MALT_LOG_LEVEL": "INFO"}
    rerun = run_cli(other, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming critiques" in rerun.stdout + rerun.stderr
    clean_root = tmp_path / "clean"
    clean_env = {"MALT_WAREHOUSE": str(clean_root), "DAGSTER_HOME": str(clean_root / "d"),
                 **{name: "" for name in s3_env if name.startswith("AWS_")}}
    assert run_cli(clean_env, "ingest").returncode == 0
    assert run_cli(clean_env, *args).returncode == 0
    for table in ("generations", "critiques", "refinements"):
        resumed = Lake(s3_env["MALT_WAREHOUSE"]).read_required(table, key)
        assert resumed.equals(Lake(clean_root).read_required(table, key)), table
    assert not [k for k in object_keys(s3_env, "checkpoints/") if "batch-" in k]


# Stops a credit write between its file's upload and its commit: the worst moment for a kill.
PAUSED_WRITE = textwrap.dedent("""
    import sys, time
    from deltalake import DeltaTable
    from malt_lake.credit import compute_credit_to_lake
    from malt_lake.lake import Lake
    from malt_lake.names import PartitionKey

    def paused(*args, **kwargs):
        print("uploaded", flush=True)
        time.sleep(600)

    DeltaTable.create_write_transaction = paused
    compute_credit_to_lake(Lake(sys.argv[1]), PartitionKey.parse(sys.argv[2]), 0.9)
""")


def test_kill_9_between_upload_and_commit_leaves_the_previous_version(s3_env):
    assert run_cli(s3_env, "ingest").returncode == 0
    made = run_cli(s3_env, "materialize", "--select", "tree", "--partition", KEY)
    assert made.returncode == 0, made.stderr
    lake = Lake(s3_env["MALT_WAREHOUSE"])
    key = PartitionKey.parse(KEY)
    version, before = lake.version("credit"), lake.read_required("credit", key)
    files_before = set(object_keys(s3_env, "lake/credit/"))

    proc = subprocess.Popen([sys.executable, "-c", PAUSED_WRITE, s3_env["MALT_WAREHOUSE"], KEY],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "uploaded"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    orphans = set(object_keys(s3_env, "lake/credit/")) - files_before
    assert len(orphans) == 1 and next(iter(orphans)).endswith(".parquet")  # in no commit
    assert lake.version("credit") == version
    assert lake.read_required("credit", key).equals(before)
    assert {c.get("malt.theta") for c in lake.history("credit")} == {None, "0.5"}
    removed = lake.vacuum(0, dry_run=False)["credit"]
    assert [r.rsplit("/", 1)[-1] for r in removed] == [next(iter(orphans)).rsplit("/", 1)[-1]]
    assert lake.read_required("credit", key).equals(before)


@pytest.mark.parametrize(("change", "needle", "command"), [
    ({"MALT_WAREHOUSE": "s3://no-such-bucket/wh"}, "bucket 'no-such-bucket' at http",
     ["ingest"]),
    ({"AWS_ENDPOINT_URL": "127.0.0.1:1"}, "AWS_ENDPOINT_URL='127.0.0.1:1' needs its scheme",
     ["sql", "select 1"]),
])
def test_a_warehouse_that_cannot_be_reached_is_named(s3_env, change, needle, command):
    proc = run_cli({**s3_env, **change}, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("location", ["s3://", "s3:///prefix"])
def test_a_warehouse_uri_without_a_bucket_is_refused(location):
    from malt_lake.errors import ConfigError

    with pytest.raises(ConfigError, match="names no bucket"):
        Lake(location)
