"""The Delta lake's user-facing edges: a pre-Delta warehouse, export, vacuum, ``--as-of``."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from malt_lake import schemas
from malt_lake.errors import LakeError
from malt_lake.export import export_table
from malt_lake.lake import Lake
from malt_lake.migrate import ASIDE_SUFFIX, migrate_plain_parquet
from malt_lake.names import PartitionKey
from malt_lake.query import run_read_only
from tests.test_lake_and_query import KEY, question_rows
from tests.test_reliability import env_for, run_cli

OTHER = PartitionKey("arith", "train", 1)


def write_plain_parquet_lake(lake: Lake) -> None:
    """A warehouse as malt-lake wrote it before Delta: one data.parquet per partition."""
    for key, n in ((KEY, 3), (OTHER, 2)):
        path = lake.tables_dir / "questions" / f"dataset={key.dataset}" / \
            f"shard={key.shard}" / "data.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(question_rows(key, n), path)


def test_a_plain_parquet_warehouse_is_refused_then_migrated_in_place(lake):
    write_plain_parquet_lake(lake)
    with pytest.raises(LakeError, match=r"older malt-lake.*malt-lake migrate"):
        lake.read_partition("questions", KEY)
    assert migrate_plain_parquet(lake) == {"questions": 2}
    assert lake.read_required("questions", KEY).num_rows == 3
    assert lake.read_required("questions", OTHER).num_rows == 2
    assert not (lake.tables_dir / f"questions{ASIDE_SUFFIX}").exists()
    assert migrate_plain_parquet(lake) == {}  # nothing left to convert


def test_an_interrupted_migration_finishes_on_the_next_run(lake):
    write_plain_parquet_lake(lake)
    aside = lake.tables_dir / f"questions{ASIDE_SUFFIX}"
    (lake.tables_dir / "questions").rename(aside)  # killed after the rename ...
    lake.write_partition("questions", KEY, question_rows(KEY, 3))  # ... and one partition
    assert migrate_plain_parquet(lake) == {"questions": 2}
    assert run_read_only(lake, "select count(*) n from questions").to_pylist() == [{"n": 5}]


def test_export_writes_exactly_one_version(lake, tmp_path):
    lake.write_partition("questions", KEY, question_rows(KEY, 3, tag="a"))
    lake.write_partition("questions", KEY, question_rows(KEY, 4, tag="b"))
    path, rows = export_table(lake, "questions", tmp_path / "now.parquet")
    assert rows == 4 and pq.read_table(path).column("question").to_pylist()[0].endswith("b")
    path, rows = export_table(lake, "questions", tmp_path / "then.jsonl", version=1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == len(lines) == 3 and lines[0]["question"].endswith("a")
    with pytest.raises(LakeError, match=r"end it in \.parquet or \.jsonl"):
        export_table(lake, "questions", tmp_path / "out.csv")
    with pytest.raises(LakeError, match="has no version 9"):
        export_table(lake, "questions", tmp_path / "x.parquet", version=9)


def test_vacuum_keeps_the_latest_version_and_drops_older_ones(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 3, tag="a"))
    lake.write_partition("questions", KEY, question_rows(KEY, 4, tag="b"))
    # a killed writer's file: in the partition's directory, in no commit
    orphan = lake.table_dir("questions") / f"dataset=arith/shard={KEY.shard}/part-dead.parquet"
    pq.write_table(question_rows(KEY, 1), orphan)
    assert any(path.endswith("part-dead.parquet")
               for path in lake.vacuum(0, dry_run=True)["questions"])
    assert lake.vacuum(0, dry_run=True)["questions"]  # version 1's file
    assert run_read_only(lake, "select count(*) n from questions_v1",
                         as_of={"questions": 1}).to_pylist() == [{"n": 3}]  # dry run: kept
    files = lambda: sorted(lake.table_dir("questions").rglob("*.parquet"))  # noqa: E731
    assert len(files()) == 3
    deleted = lake.vacuum(0, dry_run=False)["questions"]
    assert len(deleted) == 2 and len(files()) == 1 and not orphan.exists()
    assert lake.read_required("questions", KEY).num_rows == 4
    with pytest.raises(LakeError, match="files were vacuumed"):  # gone with its file
        run_read_only(lake, "select count(*) from questions_v1", as_of={"questions": 1})


def test_cli_time_travel_export_and_vacuum(tmp_path):
    root = tmp_path / "warehouse"
    lake = Lake(root)
    lake.write_partition("questions", KEY, question_rows(KEY, 3, tag="a"))
    lake.write_partition("questions", KEY, question_rows(KEY, 4, tag="b"))
    env = env_for(root)
    both = run_cli(env, "sql", "--as-of", "questions=1", "--format", "json",
                   "select (select count(*) from questions) now, "
                   "(select count(*) from questions_v1) earlier")
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout) == [{"now": 4, "earlier": 3}]
    listed = run_cli(env, "sql", "--format", "json", "select version, rows from lake_versions "
                     "where table_name = 'questions' and operation = 'WRITE' order by version")
    assert json.loads(listed.stdout) == [{"version": 1, "rows": 3}, {"version": 2, "rows": 4}]
    bad = run_cli(env, "sql", "--as-of", "questions", "select 1")
    assert bad.returncode == 2 and "TABLE=VERSION" in bad.stderr
    missing = run_cli(env, "sql", "--as-of", "questions=8", "select 1")
    assert missing.returncode == 2 and "questions has no version 8" in missing.stderr
    assert "Traceback" not in missing.stderr
    exported = run_cli(env, "export", "questions", "--to", str(tmp_path / "q.jsonl"))
    assert exported.returncode == 0 and "4 row(s) of questions" in exported.stdout
    refused = run_cli(env, "vacuum", "--retain-hours", "0")  # a writer's file is uncommitted
    assert refused.returncode == 2 and "greater than or equal to 1" in refused.stderr
    dry = run_cli(env, "vacuum")  # nothing is older than a week
    assert dry.returncode == 0 and "would delete 0 file(s)" in dry.stdout


def _credit_file_writer(rows: int, *, columns_ok: bool = True, fail: bool = False):
    """A stand-in for DuckDB writing one credit partition's file (no partition columns)."""
    def write(path):
        names = [f for f in schemas.CREDIT if f.name not in ("dataset", "shard")]
        if not columns_ok:
            names = names[:-1]
        table = pa.table({f.name: pa.array([f"{f.name}{i}" if f.type == pa.string() else None
                                            for i in range(rows)], f.type) for f in names})
        pq.write_table(table, path)
        if fail:
            raise RuntimeError("the writer died after its file")
    return write


def test_a_file_written_in_place_is_committed_as_is_or_removed(lake):
    first = lake.write_partition_with("credit", KEY, _credit_file_writer(5))
    assert (first.rows, lake.read_required("credit", KEY).num_rows) == (5, 5)
    assert set(lake.read_required("credit", KEY).column("shard").to_pylist()) == {KEY.shard}
    for bad, error in ((_credit_file_writer(3, fail=True), RuntimeError),
                       (_credit_file_writer(3, columns_ok=False), LakeError)):
        with pytest.raises(error):
            lake.write_partition_with("credit", KEY, bad)
        assert lake.version("credit") == first.version  # nothing committed
        assert len(list(lake.table_dir("credit").rglob("*.parquet"))) == 1  # nor left behind
    second = lake.write_partition_with("credit", KEY, _credit_file_writer(2), write_id="r")
    assert lake.read_required("credit", KEY).num_rows == 2  # replaced, not appended
    again = lake.write_partition_with("credit", KEY, _credit_file_writer(9), write_id="r")
    assert again.skipped and again.version == second.version


def test_a_writer_that_lost_the_race_for_its_partition_fails_cleanly(lake, monkeypatch):
    lake.write_partition_with("credit", KEY, _credit_file_writer(5))
    stale = lake.delta_table("credit")  # the snapshot a slow writer started from
    winner = lake.write_partition_with("credit", KEY, _credit_file_writer(2))
    real = Lake.delta_table
    monkeypatch.setattr(Lake, "delta_table", lambda self, table, version=None: (
        stale if table == "credit" and version is None else real(self, table, version)))
    with pytest.raises(LakeError, match="another writer committed this partition"):
        lake.write_partition_with("credit", KEY, _credit_file_writer(7))
    monkeypatch.undo()
    assert lake.version("credit") == winner.version
    assert lake.read_required("credit", KEY).num_rows == 2  # the winner's rows, whole
    assert len(list(lake.table_dir("credit").rglob("*.parquet"))) == 2  # loser's file gone


def test_as_of_reads_one_table_at_several_versions(lake):
    for n in (1, 2, 3):
        lake.write_partition("questions", KEY, question_rows(KEY, n))
    counts = run_read_only(lake, "select (select count(*) from questions_v1) a, "
                                 "(select count(*) from questions_v2) b, "
                                 "(select count(*) from questions) c",
                           as_of=[("questions", 1), ("questions", 2)]).to_pylist()
    assert counts == [{"a": 1, "b": 2, "c": 3}]
    with pytest.raises(LakeError, match="unknown lake table 'nope'"):
        export_table(lake, "nope", lake.root / "x.parquet")
