"""The lake's write guarantees and the read-only SQL surface."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time

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
    # each write is one Delta version (0 is the empty table); the first stays readable
    assert lake.version("questions") == 2
    earlier = run_read_only(lake, "select count(*) n, min(question) q from questions_v1",
                            as_of={"questions": 1})
    assert earlier.to_pylist() == [{"n": 5, "q": "q0"}]
    with pytest.raises(LakeError, match="questions has no version 7"):
        run_read_only(lake, "select 1", as_of={"questions": 7})
    with pytest.raises(QueryRefused, match="not a lake table"):
        run_read_only(lake, "select 1", as_of={"nope": 1})


def test_an_empty_partition_is_written_and_other_partitions_are_kept(lake):
    other = PartitionKey("arith", "train", 1)
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    lake.write_partition("questions", other, question_rows(other, 2))
    lake.write_partition("questions", KEY, question_rows(KEY, 0))
    assert lake.has_partition("questions", KEY)  # written, with no rows
    assert lake.read_partition("questions", KEY).num_rows == 0
    assert lake.read_partition("questions", other).num_rows == 2
    assert not lake.has_partition("questions", PartitionKey("arith", "train", 2))
    assert lake.read_partition("questions", PartitionKey("arith", "train", 2)) is None
    assert lake.partitions("questions") == [other]  # the partitions that hold rows


def test_a_retried_write_with_the_same_id_commits_once(lake):
    first = lake.write_partition("questions", KEY, question_rows(KEY, 3), write_id="run-1")
    again = lake.write_partition("questions", KEY, question_rows(KEY, 3), write_id="run-1")
    assert (first.skipped, again.skipped) == (False, True)
    assert again.version == first.version == lake.version("questions")
    assert lake.write_partition("questions", KEY, question_rows(KEY, 3),
                                write_id="run-2").version == first.version + 1


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


BIG = 300_000  # rows per write: long enough that the kill lands inside one


def _rewrite_forever(root: str) -> None:
    """Replace the partition again and again (tag = the write's number) until killed."""
    lake = Lake(root)
    for i in range(1_000_000):
        lake.write_partition("questions", KEY, question_rows(KEY, BIG, tag=f"w{i}"))


def test_kill_9_during_writes_leaves_a_whole_version_readable(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 4, tag="old"))
    child = multiprocessing.get_context("spawn").Process(target=_rewrite_forever,
                                                         args=(str(lake.root),))
    child.start()
    deadline = time.monotonic() + 120
    while lake.version("questions") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.13)  # somewhere inside a later write: files written, commit pending
    os.kill(child.pid, signal.SIGKILL)
    child.join(60)
    assert child.exitcode == -9
    # every version reads as one whole write: its row count and a single tag
    for version in range(1, lake.version("questions") + 1):
        rows = run_read_only(lake, f"select count(*) n, count(distinct regexp_extract("
                                   f"question, 'w\\d+$')) tags from questions_v{version}",
                             as_of={"questions": version}).to_pylist()
        assert rows == [{"n": 4 if version == 1 else BIG, "tags": 1}]
    # the killed writer's files are in no version: vacuum finds them and nothing else reads them
    lake.write_partition("questions", KEY, question_rows(KEY, 2))
    assert lake.read_partition("questions", KEY).num_rows == 2
    orphans = lake.vacuum(0, dry_run=True)["questions"]
    assert orphans  # the replaced versions' files (and any file of the killed write)
    lake.vacuum(0, dry_run=False)
    assert lake.read_partition("questions", KEY).num_rows == 2


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
    ("select * from read_parquet('{root}/lake/nope/*.parquet')",
     "No files found that match the pattern"),
])
def test_a_users_sql_mistake_is_one_line_naming_what_exists(lake, statement, needle):
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    with pytest.raises(QueryFailed, match=re.escape(needle)) as caught:
        run_read_only(lake, statement.replace("{root}", str(lake.root)))
    assert "\n" not in str(caught.value)


def test_read_only_surface_answers_selects_describe_summarize(lake):
    lake.write_partition("questions", KEY, question_rows(KEY, 3))
    assert run_read_only(lake, "select count(*) as n from questions").to_pylist() == [{"n": 3}]
    assert run_read_only(lake, "describe questions").num_rows == len(QUESTIONS)
    assert run_read_only(lake, "summarize questions").num_rows == len(QUESTIONS)


def test_duckdb_pushes_partition_and_column_filters_into_the_delta_scan(lake):
    for index in range(3):
        key = PartitionKey("arith", "train", index)
        lake.write_partition("questions", key, question_rows(key, 4))
    plan = run_read_only(lake, "explain select question from questions "
                               "where shard = 'train.0001' and row_index > 1")
    text = "\n".join(str(value) for row in plan.to_pylist() for value in row.values())
    compact = text.replace(" ", "").replace('"', "")
    assert "Function:READ_PARQUET" in compact  # DuckDB's own reader over the version's files
    assert "FileFilters:shard='train.0001'" in compact  # the partition filter prunes files
    assert "ScanningFiles:1/3" in compact  # one partition's file of three is read
    assert "│Filters:row_index>1│" in compact  # a column filter pushed into the reader
    assert "Projections:question│" in compact  # one column read
    rows = run_read_only(lake, "select count(*) n from questions where shard = 'train.0001' "
                               "and row_index > 1").to_pylist()
    assert rows == [{"n": 2}]
