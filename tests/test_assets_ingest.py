"""Dagster: definitions load, and the ingest assets materialize into a temp lake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.definitions import ALL_ASSETS, defs
from assets.partitions import shard_partitions
from malt_lake.query import run_read_only
from tests.resources import asset_resources

REPO = Path(__file__).resolve().parents[1]


def resources(lake, config: Path | None = None) -> dict:
    return asset_resources(lake, config=config)


def ingest(lake, instance, config: Path | None = None) -> list[str]:
    result = dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                            resources=resources(lake, config))
    assert result.success
    keys = sorted(instance.get_dynamic_partitions(shard_partitions.name))
    for key in keys:
        assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=key,
                              instance=instance, resources=resources(lake, config)).success
    return keys


def test_definitions_load_and_validate():
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} >= {
        "dataset_catalog", "questions"}
    defs.validate_loadable(defs)
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_builtin_set_materializes_with_deterministic_ids(lake, instance):
    keys = ingest(lake, instance)
    assert keys == ["arith.heldout.0000", "arith.heldout.0001", "arith.train.0000",
                    "arith.train.0001"]
    counts = run_read_only(lake, "select dataset, shard, count(*) n from questions "
                                 "group by all order by all").to_pylist()
    assert counts == [{"dataset": "arith", "shard": s, "n": 16}
                      for s in ["heldout.0000", "heldout.0001", "train.0000", "train.0001"]]
    before = run_read_only(lake, "select * from questions order by question_id")
    ingest(lake, instance)  # a rerun replaces: same ids, same count, same content
    after = run_read_only(lake, "select * from questions order by question_id")
    assert before.equals(after)
    assert run_read_only(lake, "select count(*) n from questions where question_id = "
                               "'arith:train-000017' and shard = 'train.0001'"
                         ).to_pylist() == [{"n": 1}]


def test_shared_gsm8k_dev_materializes(lake, instance, datasets_dir, tmp_path):
    config = tmp_path / "gsm.toml"
    config.write_text(f'[[datasets]]\nname = "gsm8k"\nfamily = "numeric"\nshard_size = 64\n'
                      f'[datasets.splits.dev]\nkind = "file"\n'
                      f'path = "{datasets_dir}/gsm8k/dev.jsonl"\n')
    keys = ingest(lake, instance, config)
    assert keys == [f"gsm8k.dev.{i:04d}" for i in range(4)]
    rows = run_read_only(lake, "select shard, count(*) n, min(question_id) first from questions "
                               "group by all order by all").to_pylist()
    assert [r["n"] for r in rows] == [64, 64, 64, 8]
    assert rows[0]["first"] == "gsm8k:gsm8k-train-00000"
    answer = run_read_only(lake, "select answer from questions where question_id = "
                                 "'gsm8k:gsm8k-train-00000'").to_pylist()
    assert answer == [{"answer": "72"}]


def test_malformed_dataset_fails_and_writes_nothing(lake, instance, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n')
    config = tmp_path / "c.toml"
    config.write_text(f'[[datasets]]\nname = "mine"\nfamily = "numeric"\n'
                      f'[datasets.splits.train]\nkind = "file"\npath = "{good}"\n')
    ingest(lake, instance, config)
    before = run_read_only(lake, "select * from questions")
    good.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n{"id": "b"}\n')
    result = dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                            resources=resources(lake, config), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "line 2, field 'question': missing" in str(failure.step_failure_data.error)
    assert run_read_only(lake, "select * from questions").equals(before)
    # the questions partition refuses to slice a source that changed since the catalog
    good.write_text('{"id": "z", "question": "2+2?", "answer": "4"}\n')
    result = dg.materialize(ALL_ASSETS, selection=["questions"], partition_key="mine.train.0000",
                            instance=instance, resources=resources(lake, config),
                            raise_on_error=False)
    assert not result.success
    assert run_read_only(lake, "select * from questions").equals(before)


def test_unknown_partition_is_refused(lake, instance):
    ingest(lake, instance)
    instance.add_dynamic_partitions(shard_partitions.name, ["ghost.train.0000"])
    result = dg.materialize(ALL_ASSETS, selection=["questions"], partition_key="ghost.train.0000",
                            instance=instance, resources=resources(lake), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "unknown dataset 'ghost'" in str(failure.step_failure_data.error)


def test_cli_end_to_end(warehouse):
    cli = [str(Path(sys.executable).parent / "malt-lake")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)

    assert run("ingest").returncode == 0
    counts = run("sql", "select dataset, count(*) from questions group by all")
    assert counts.returncode == 0 and "arith" in counts.stdout and "│ 64 " in counts.stdout
    for args, needle in [
        (["sql", "drop view questions"], "refused a drop statement"),
        (["materialize", "--select", "questions", "--partition", "../x"],
         "invalid partition key"),
        (["materialize", "--select", "questions", "--partition", "arith.train.0099"],
         "unknown partition 'arith.train.0099'"),
    ]:
        proc = run(*args)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_selections_that_are_jobs_run_as_named_jobs(lake, instance, monkeypatch):
    from assets import runner
    from assets.definitions import defs

    monkeypatch.setenv("MALT_BACKEND", "fake")
    monkeypatch.setenv("MALT_MODEL", "fake")
    runner.materialize(["dataset_catalog"], dagster_instance=instance)
    key = "arith.train.0000"
    runner.materialize(["questions"], key, dagster_instance=instance)
    tree = runner.expand_selection(["tree"])
    config = runner.run_config_for(0.5, {"n": 2, "max_tokens": 8}, tree)
    runner.materialize(tree, key, config, dagster_instance=instance)
    runner.materialize(runner.expand_selection(["cheap"]), key,
                       runner.run_config_for(0.7, selection=runner.expand_selection(["cheap"])),
                       dagster_instance=instance)
    runner.materialize(["credit"], key, runner.run_config_for(0.6, selection=["credit"]),
                       dagster_instance=instance)
    names = [run.job_name for run in reversed(instance.get_runs())]
    assert names[2:] == ["tree", "relabel", "__ephemeral_asset_job__"], names
    assert instance.get_runs()[1].tags["dagster/partition"] == key
    # what the CLI starts, the UI's launchpad starts with the same config
    for job in ("tree", "relabel", "expansion"):
        selection = runner.expand_selection([job])
        job_config = runner.run_config_for(0.7, {"n": 2, "max_tokens": 8}, selection)
        assert job_config["ops"]
        assert dg.validate_run_config(defs.resolve_job_def(job), job_config)
        # round 2's job takes the same config, its ops named with the round's prefix
        assert dg.validate_run_config(defs.resolve_job_def(f"round_2_{job}"),
                                      runner.round_config(job_config, 2))
    assert set(runner.job_assets()) == {"expansion", "tree", "relabel", "role_datasets",
                                        "adapters", "evaluate"}


def test_every_table_asset_publishes_its_columns_from_schemas():
    from malt_lake import schemas

    graph = defs.resolve_asset_graph()
    tables = {}
    for key in graph.get_all_asset_keys():
        metadata = graph.get(key).metadata
        if "table" not in metadata:
            continue
        columns = metadata["dagster/column_schema"].columns
        expected = schemas.schema_of(metadata["table"])
        assert [(c.name, c.type) for c in columns] == [(f.name, str(f.type)) for f in expected]
        tables[key.to_user_string()] = metadata["table"]
    assert set(tables.values()) >= set(schemas.PARTITIONED) | {"shards", "eval_predictions"}
    assert set(tables) == {k.to_user_string() for k in graph.get_all_asset_keys()
                           if not k.to_user_string().endswith("_adapter")}
