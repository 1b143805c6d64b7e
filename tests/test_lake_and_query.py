"""The lake's write guarantees and the read-only SQL surface."""

from __future__ import annotations

import multiprocessing
import os
import re

import pyarrow as pa
import pytest

from malt_lake.errors import LakeError, QueryFailed, QueryRefused
from malt_lake.lake import Lake, partition_lock
from malt_lake.names import PartitionKey
from malt_lake.query import connect, run_read_only
from malt_lake.schemas import QUESTIONS

KEY = PartitionKey("arith", "train", 0)


def question_rows(key: PartitionKey, n: int, tag: str = "") -> pa.Table:
    return pa.Table.from_pylist([{
        "dataset": key.dataset, "shard": key.shard, "question_id": f"{key.dataset}:{i}",
        "split": key.split, "row_index": i, "question": f"q{i}{tag}", "choices": None,
        "answer": str(i), "solution": None, "family": "numeric", "source": "test",
    } for i in range(n)], schema=QUESTIONS)


def test_rewrite_replaces_partition_never_appends(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 5))
    lake.write_partition("questions", KEY, question_rows(KEY, 5, tag="v2"))
    result = run_read_only(lake, "select count(*) n, count(distinct question_id) u, "
                                 "min(question) q from questions")
    assert result.to_pylist() == [{"n": 5, "u": 5, "q": "q0v2"}]
    assert [p.name for p in lake.partition_dir("questions", KEY).iterdir()] == ["data.parquet"]


def test_partition_keys_and_names_cannot_escape_the_warehouse(lake):
    for bad in ["../x.train.0000", "a.b", "a/../../etc.train.0000", "A.train.0000",
                "x.train.00a1", "x..0000"]:
        with pytest.raises(LakeError):
            PartitionKey.parse(bad)
    with pytest.raises(LakeError, match="invalid table"):
        lake.table_dir("../../etc")
    with pytest.raises(LakeError):
        PartitionKey.from_columns("arith", "../train.0000")


def test_rows_of_another_partition_are_refused(lake):
    with pytest.raises(LakeError, match="do not belong to partition"):
        lake.write_partition("questions", KEY, question_rows(PartitionKey("arith", "train", 1), 2))
    assert not lake.has_data("questions")


def _die_mid_write(root: str) -> None:
    """Write a partition from a child process that is killed before its rename."""
    import malt_lake.lake as lake_module

    real_replace = os.replace

    def killed_before_rename(src, dst):
        os.kill(os.getpid(), 9)
        real_replace(src, dst)

    lake_module.os.replace = killed_before_rename
    Lake(root).write_partition("questions", KEY, question_rows(KEY, 3, tag="new"))


def test_kill_during_write_leaves_old_partition_visible(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 4, tag="old"))
    child = multiprocessing.get_context("spawn").Process(target=_die_mid_write,
                                                         args=(str(lake.root),))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    leftovers = [p.name for p in lake.partition_dir("questions", KEY).iterdir()]
    assert any(name.startswith(".tmp-") for name in leftovers)  # the dead writer's temp file
    result = run_read_only(lake, "select count(*) n, min(question) q from questions")
    assert result.to_pylist() == [{"n": 4, "q": "q0old"}]
    lake.write_partition("questions", KEY, question_rows(KEY, 2))  # next write cleans up
    assert [p.name for p in lake.partition_dir("questions", KEY).iterdir()] == ["data.parquet"]


def test_second_writer_of_a_partition_fails_clearly(lake):
    with partition_lock(lake, "questions", KEY):
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            message = pool.apply(_try_lock, (str(lake.root),))
    assert "questions.arith.train.0000 is being written by another run" in message
    assert f"pid {os.getpid()}" in message
    with partition_lock(lake, "questions", KEY):  # released: taking it again works
        pass


def _try_lock(root: str) -> str:
    try:
        with partition_lock(Lake(root), "questions", KEY):
            return "acquired"
    except LakeError as exc:
        return str(exc)


def test_views_exist_and_are_typed_before_any_write(lake):
    con = connect(lake)
    assert con.execute("select count(*) from questions").fetchone() == (0,)
    columns = [row[0] for row in con.execute("describe questions").fetchall()]
    assert columns == QUESTIONS.names


def test_connect_can_limit_the_views_to_named_tables(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    con = connect(lake, derived=False, tables=("questions",))
    views = {row[0] for row in con.execute(
        "select view_name from duckdb_views() where not internal").fetchall()}
    assert views == {"questions"}
    assert con.execute("select count(*) from questions").fetchone() == (3,)
    with pytest.raises(ValueError, match="derived views read every table"):
        connect(lake, tables=("questions",))


@pytest.mark.parametrize("statement,needle", [
    ("create table t as select 1", "refused a create statement"),
    ("copy questions to '/tmp/out.csv'", "refused a copy statement"),
    ("insert into questions select * from questions", "refused a insert statement"),
    ("attach '/tmp/x.duckdb'", "refused a attach statement"),
    ("select 1; select 2", "run one query at a time"),
    ("select * from read_csv('/etc/passwd')", "may only read files under"),
    ("select * from read_text('/etc/hostname')", "may only read files under"),
    ("set enable_external_access = true", "refused a set statement"),
    ("selec 1", "cannot parse the query"),
])
def test_read_only_surface_refuses_writes_and_outside_files(lake, statement, needle):
    with pytest.raises(QueryRefused, match=needle):
        run_read_only(lake, statement)


@pytest.mark.parametrize("statement,needle", [
    ("select nope from questions", 'Referenced column "nope" not found in FROM clause! '
                                   '(Candidate bindings: '),
    ("select * from questionz", "Table with name questionz does not exist!"),
    ("select 1 / 0 > 'x'::int", "Could not convert string 'x'"),
    ("select count(*) from questions group by nothing_here", "nothing_here"),
    ("select * from read_parquet(getvariable('lake_root') || '/nope/*.parquet')",
     "No files found that match the pattern"),
])
def test_a_users_sql_mistake_is_one_line_naming_what_exists(lake, statement, needle):
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    with pytest.raises(QueryFailed, match=re.escape(needle)) as caught:
        run_read_only(lake, statement)
    assert "\n" not in str(caught.value)


def test_read_only_surface_answers_selects_describe_summarize(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    assert run_read_only(lake, "select count(*) as n from questions").to_pylist() == [{"n": 3}]
    assert run_read_only(lake, "describe questions").num_rows == len(QUESTIONS)
    assert run_read_only(lake, "summarize questions").num_rows == len(QUESTIONS)
