"""Reliability with real processes: kill -9 during training, two writers of one partition at
once, the whole graph run twice, and bad input through the CLI, each leaving the lake sound."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from malt_lake.training.store import AdapterStore
from tests.resources import asset_resources

CLI = str(Path(sys.executable).parent / "malt-lake")
KEY = "arith.train.0000"


def env_for(root: Path, **extra: str) -> dict:
    env = {name: value for name, value in os.environ.items()
           if name not in ("MALT_CONFIG", "MALT_ROUNDS")}
    return {**env, "MALT_WAREHOUSE": str(root), "DAGSTER_HOME": str(root / "dagster"),
            "MALT_ENV": "test", **extra}


def run_cli(env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every data file under the lake and adapters with a hash of its bytes."""
    files = [*(root / "lake").rglob("*"), *(root / "adapters").rglob("*")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


@pytest.fixture(scope="module")
def fake_tree_template(tmp_path_factory) -> Path:
    """A warehouse (lake and Dagster instance) with one partition's tree and role datasets,
    built once through the CLI (fake backend)."""
    root = tmp_path_factory.mktemp("fake-tree") / "warehouse"
    env = env_for(root)
    assert run_cli(env, "ingest").returncode == 0
    made = run_cli(env, "materialize", "--select", "tree", "--partition", KEY)
    assert made.returncode == 0, made.stderr
    return root


@pytest.fixture
def fake_tree(fake_tree_template, tmp_path) -> Path:
    """A copy of that warehouse of the test's own: tests change it, or check that a bad
    command changed nothing, and each starts from the same one."""
    root = tmp_path / "warehouse"
    shutil.copytree(fake_tree_template, root, symlinks=True)
    return root


def test_kill_9_during_training_leaves_no_half_written_adapter(fake_tree):
    env = env_for(fake_tree)
    args = ["materialize", "--select", "refiner_adapter", "--dataset", "arith",
            "--train-steps", "1"]
    proc = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    role_dir = fake_tree / "adapters" / "arith" / "refiner"
    deadline = time.time() + 300
    while time.time() < deadline and not list(role_dir.glob(".tmp-*/stages")) \
            and not list(role_dir.glob(".tmp-*/adapter_config.json")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)  # the SFT stage is done, DPO is running
    proc.wait()
    assert list(role_dir.glob(".tmp-*")), "training finished before the kill"
    store = AdapterStore(fake_tree, "arith")
    assert store.current("refiner") is None and store.versions("refiner") == []

    rerun = run_cli(env, *args)
    assert rerun.returncode == 0, rerun.stderr
    directory = store.current("refiner")
    assert directory is not None and (directory / "manifest.json").is_file()
    assert not list(role_dir.glob(".tmp-*"))  # the dead run's build dir was removed
    assert store.versions("refiner") == [directory.name]


def test_two_runs_of_one_partition_at_once_one_fails_clearly_and_the_lake_is_sound(tmp_path):
    root = tmp_path / "warehouse"
    assert run_cli(env_for(root), "ingest").returncode == 0
    args = ["materialize", "--select", "generations", "--partition", KEY, "--batch-prompts", "2"]
    first = subprocess.Popen([CLI, *args], env=env_for(root, MALT_FAKE_DELAY_S="3"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = root / "checkpoints" / "generations"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.rglob("batch-*.parquet")):
        time.sleep(0.05)
    second = run_cli(env_for(root), *args)
    assert second.returncode == 2
    assert "arith.train.0000 is being materialized by another run" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    table = Lake(root).read_required("generations", PartitionKey.parse("arith.train.0000"))
    ids = table.column("g_id").to_pylist()
    assert len(ids) == len(set(ids)) == 16 * 3


ALL_SHARD_ASSETS = ["questions", "generations", "critiques", "refinements",
                    "generation_rewards", "leaf_rewards", "credit", "sft_generator",
                    "sft_verifier", "sft_refiner", "dpo_generator", "dpo_verifier", "dpo_refiner"]
IDS = {
    "questions": "question_id", "generations": "g_id", "critiques": "v_id",
    "refinements": "r_id", "leaf_rewards": "r_id", "credit": "node_id || label::varchar",
    "sft_generator": "node_id", "sft_verifier": "node_id", "sft_refiner": "node_id",
    "dpo_verifier": "pos_id || neg_id", "dpo_refiner": "pos_id || neg_id",
    "eval_predictions": "eval_id || system || seed::varchar || question_id",
}


def whole_graph(lake, instance, resources) -> dict:
    """Materialize every asset once; return each table's ids and the adapter versions."""
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    for key in sorted(instance.get_dynamic_partitions("shards")):
        selection = ALL_SHARD_ASSETS if ".train." in key else ["questions"]
        assert dg.materialize(ALL_ASSETS, selection=selection, partition_key=key,
                              instance=instance, resources=resources).success
    assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources,
                          partition_key="arith", selection=[
                              "generator_adapter", "verifier_adapter", "refiner_adapter"]).success
    assert dg.materialize(ALL_ASSETS, selection=["evaluation"], partition_key="arith",
                          instance=instance, resources=resources, run_config={"ops": {
                              "evaluation": {"config": {"seeds": 1, "limit": 4}}}}).success
    state = {table: run_read_only(lake, f"select {expr} as id from {table} order by 1")
             .column("id").to_pylist() for table, expr in IDS.items()}
    store = AdapterStore(lake, "arith")
    state["adapters"] = [d.name if (d := store.current(role)) else None
                         for role in ("generator", "verifier", "refiner")]
    return state


def test_whole_graph_twice_gives_identical_ids_and_counts(lake, instance, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('base_model = "embedded"\n[sft]\nmax_steps = 1\nmin_rows = 1\n'
                      '[dpo]\nmax_steps = 1\nmin_rows = 1\n')
    resources = asset_resources(lake, recipe=recipe)
    first = whole_graph(lake, instance, resources)
    for table in ("questions", "refinements", "credit", "sft_refiner", "dpo_refiner",
                  "eval_predictions"):
        assert first[table], table
    second = whole_graph(lake, instance, resources)
    assert second == first
    assert len(AdapterStore(lake.root, "arith").versions("refiner")) == 1  # reused, not retrained


@pytest.mark.parametrize(("args", "needle"), [
    (["materialize", "--select", "credit", "--partition", KEY, "--theta", "1.5"],
     "theta must be strictly between 0 and 1"),
    (["materialize", "--select", "credit", "--partition", KEY, "--theta", "0"],
     "theta must be strictly between 0 and 1"),
    (["materialize", "--select", "credit", "--partition", KEY, "--theta", "high"],
     "valid number"),
    (["materialize", "--select", "generations", "--partition", KEY, "--n", "0"],
     "greater than or equal to 1"),
    (["materialize", "--select", "evaluation", "--dataset", "nope"],
     "unknown partition 'nope'"),
    (["ingest", "--dataset", "nope"], "unknown dataset(s) nope"),
    (["materialize", "--select", "nonsense", "--partition", KEY], "unknown asset 'nonsense'"),
    (["materialize", "--select", "credit"], "need --partition or --all-train"),
    (["materialize", "--select", "refiner_adapter", "--recipe", "no-such-recipe"],
     "no training recipe 'no-such-recipe'"),
    (["tree", "arith-train-999999"], "no question 'arith-train-999999'"),
    (["sql", "copy questions to 'x.csv'"], "refused a copy statement"),
    (["sql", "select nope from questions"], 'Binder Error: Referenced column "nope" not found'),
    (["sql", "select * from questionz"], 'Did you mean "questions"?'),
    (["sql", "select 'a'::int"], "Conversion Error: Could not convert string 'a' to INT32"),
    (["sql", "select '[/x]'::int"], "Could not convert string '[/x]' to INT32"),
])
def test_bad_cli_input_is_a_clear_error_and_changes_nothing(fake_tree, args, needle):
    before = snapshot(fake_tree)
    proc = run_cli(env_for(fake_tree), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(fake_tree) == before


def test_model_path_that_does_not_exist_is_named(fake_tree):
    before = snapshot(fake_tree)
    proc = run_cli(env_for(fake_tree, MALT_BACKEND="transformers", MALT_MODEL="/no/such/model"),
                   "materialize", "--select", "generations", "--partition", KEY)
    assert proc.returncode == 2 and "model path '/no/such/model' does not exist" in proc.stderr
    assert snapshot(fake_tree) == before


def test_adapter_trained_on_another_base_model_is_refused(fake_tree, tmp_path):
    adapter = tmp_path / "foreign"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    (adapter / "manifest.json").write_text(json.dumps({"base_model": "meta-llama/Other"}))
    before = snapshot(fake_tree)
    proc = run_cli(env_for(fake_tree, MALT_BACKEND="transformers", MALT_MODEL="embedded"),
                   "materialize", "--select",
                   "generations", "--partition", KEY, "--n", "1", "--max-tokens", "4",
                   "--adapter", str(adapter))
    assert proc.returncode == 2
    assert "was trained on 'meta-llama/Other'" in proc.stderr, proc.stderr
    assert snapshot(fake_tree) == before


def test_pickle_adapters_are_refused(tmp_path):
    from malt_lake.backends.adapters import check_adapter_dir
    from malt_lake.errors import ConfigError

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="only safetensors adapters are loaded"):
        check_adapter_dir(str(tmp_path), "any")


def test_models_load_without_remote_code_and_from_safetensors(monkeypatch):
    import transformers

    from malt_lake.backends.transformers_backend import TransformersBackend
    from malt_lake.training.trainer import load_base

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    backend = TransformersBackend("embedded")
    load_base(backend.tokenizer.name_or_path, "float32")
    assert len(seen) == 2
    assert all(k["trust_remote_code"] is False and k["use_safetensors"] is True for k in seen)
