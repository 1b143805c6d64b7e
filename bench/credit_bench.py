"""Credit benchmark: the window-form credit statement vs the group-by form and the I/O bound.

Builds synthetic trees (N questions x 27 leaves) as one lake partition, then runs three
statements over it, each in its own process (so peak memory is its own) and each through the
same harness the credit asset uses (a DuckDB connection over the lake's views, the statement
streamed to a zstd Parquet file by ``sql/credit/write.sql``):

- ``window``: ``sql/credit/verifier_values.sql`` then ``sql/credit/credit.sql``, what the
  credit asset runs (window aggregations, ``malt_lake.credit.credit_relation``), reading the
  Delta tables and committing the result to the Delta credit table as the asset does;
- ``window_parquet``: the same statements on the pre-Delta lake (plain Parquet files read by
  ``read_parquet``, the result written to a file): the baseline of the Delta lake's cost;
- ``groupby``: ``bench/sql/credit_groupby.sql``, the earlier group-by form (the baseline);
- ``io_bound``: ``bench/sql/credit_io_bound.sql``, which reads the same leaf rows, critiques and
  generations and writes as many node rows with the same columns, without aggregating: no
  credit statement can be faster than reading its input and writing its output.

It prints, per partition, the seconds of each (best of ``--repeat`` runs) and the ratios
that matter: ``window_over_groupby`` (target: at most 1.25) and ``window_over_io_bound`` (the
statement forms, each on plain Parquet so only the SQL differs), ``delta_over_parquet`` (the
product's Delta path against the same statements on plain Parquet, target: at most 1.3), in
wall time and in CPU time of the same runs (``cpu_*``, steadier on a busy machine). The
window and group-by outputs are checked equal, node by node: every node at the ``--subset``
size, a hashed sample of about one node in ``--sample-every`` at the ``--questions`` size.

    .venv/bin/python bench/credit_bench.py --questions 1000000 --subset 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from malt_lake import schemas
from malt_lake.credit import credit_relation
from malt_lake.environment import environment
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.query import connect
from malt_lake.sqlfiles import read_sql

KEY = PartitionKey("bench", "train", 0)
THETA = 0.5
TARGET_WINDOW_OVER_GROUPBY = 1.25
BENCH_SQL = Path(__file__).parent / "sql"
TARGET_DELTA_OVER_PARQUET = 1.3
FORMS = ("groupby", "window", "window_parquet", "io_bound")
INPUT_TABLES = ("generations", "critiques", "leaf_rewards")


def statement(form: str) -> str:
    """The SQL text of a baseline form (the window form is the product's own statements)."""
    return (BENCH_SQL / f"credit_{form}.sql").read_text()


def build(root: Path, questions: int) -> None:
    """Write leaf_rewards, refinements, critiques and generations for one partition, as
    Delta tables and as the plain Parquet files of the baseline."""
    lake = Lake(root)
    con = duckdb.connect()
    con.execute("set preserve_insertion_order = false")
    leaves = con.sql((BENCH_SQL / "synthetic_leaves.sql").read_text(),
                     params={"questions": questions})
    leaves.to_table("leaves")
    for table, relation in [
        ("leaf_rewards", con.table("leaves").select("dataset, shard, question_id, g_id, v_id, "
                                                    "r_idx, r_id, reward")),
        ("refinements", con.table("leaves").select("dataset, shard, question_id, g_id, v_id, "
                                                   "r_idx, r_id")),
        ("critiques", con.table("leaves").select("dataset, shard, question_id, g_id, v_idx, "
                                                 "v_id").distinct()),
        ("generations", con.table("leaves").select("dataset, shard, question_id, g_idx, g_id")
         .distinct()),
    ]:
        path = plain_file(root, table)
        path.parent.mkdir(parents=True, exist_ok=True)
        relation.write_parquet(str(path))
        write_deltalake(lake.table_uri(table), contract_batches(table, path),
                        mode="overwrite", partition_by=["dataset", "shard"])
    con.close()


def contract_batches(table: str, path: Path) -> pa.RecordBatchReader:
    """The synthetic columns of ``path`` with the table contract's other columns as nulls,
    so the Delta table has the lake's schema (the statements never read the null ones)."""
    schema = schemas.schema_of(table)
    source = pq.ParquetFile(path)

    def batches():
        for batch in source.iter_batches(batch_size=1 << 17):
            yield pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                 else pa.nulls(batch.num_rows, f.type) for f in schema], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def plain_file(root: Path, table: str) -> Path:
    return root / "plain" / f"{table}.parquet"


def plain_connection(root: Path) -> duckdb.DuckDBPyConnection:
    """The pre-Delta lake's connection: a ``read_parquet`` view per input table."""
    con = duckdb.connect(":memory:")
    con.execute("set memory_limit = $limit", {"limit": environment().duckdb_memory_limit})
    for table in INPUT_TABLES:
        con.read_parquet(str(plain_file(root, table))).create_view(table)
    return con


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over
    exec from the parent, which here has just built a large synthetic lake."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def output_file(root: Path, form: str) -> Path:
    return root / "bench_out" / f"{form}.parquet"


def write_form(root: str, form: str) -> int:
    """Run one form over the partition and stream its rows to Parquet, as
    ``compute_credit_to_lake`` does (same views, settings and writer). Returns the rows."""
    lake, out = Lake(root), output_file(Path(root), form)
    out.parent.mkdir(parents=True, exist_ok=True)
    if form == "window":
        con = connect(lake, derived=False, tables=INPUT_TABLES)
    else:  # the statement forms compare on one harness: plain Parquet in, a file out
        con = plain_connection(Path(root))
    try:
        con.execute("set preserve_insertion_order = false")
        if form == "window":  # the product: Delta in, a commit to the credit table out
            credit_relation(con, KEY, THETA).create_view("credit_result")
            return lake.write_partition_with(
                "credit", KEY,
                lambda temp: con.execute(read_sql("credit/write"), {"path": str(temp)})).rows
        if form == "window_parquet":  # the same statements on plain Parquet
            relation = credit_relation(con, KEY, THETA)
        else:
            relation = con.sql(statement(form), params={"dataset": KEY.dataset,
                                                        "shard": KEY.shard, "theta": THETA})
        relation.create_view("credit_result")
        temp = out.with_name(f".{out.name}.partial")  # the old lake's temp file + rename
        con.execute((BENCH_SQL / "credit_write_plain.sql").read_text(), {"path": str(temp)})
        temp.replace(out)
    finally:
        con.close()
    return pq.ParquetFile(out).metadata.num_rows


def timed_form(root: str, form: str, out: mp.Queue) -> None:
    """Child process body: one timed run of one form."""
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = write_form(root, form)
    out.put({"rows": rows, "seconds": time.perf_counter() - started,
             "cpu_seconds": time.process_time() - cpu_started, "peak_bytes": peak_rss_bytes()})


def measure(root: Path, form: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=timed_form, args=(str(root), form, queue))
    proc.start()
    while True:  # get before join: a child blocks on exit until its queued result is read
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise SystemExit(f"{form} failed (exit {proc.exitcode})") from None
    proc.join()
    return result


def compare(root: Path, every: int) -> dict:
    """Window vs group-by output, node by node (a hashed 1-in-``every`` sample)."""
    con = duckdb.connect()
    try:
        rows = con.sql((BENCH_SQL / "compare_credit.sql").read_text(), params={
            "left": str(output_file(root, "window_parquet")),
            "right": str(output_file(root, "groupby")),
            "every": every}).fetchall()
    finally:
        con.close()
    compared, unmatched, different, example = rows[0]
    committed = Lake(root).read_partition("credit", KEY, ["node_id"]).num_rows
    if committed != pq.ParquetFile(output_file(root, "groupby")).metadata.num_rows:
        raise SystemExit(f"the Delta credit table holds {committed} nodes, not the group-by's")
    if unmatched or different:
        raise SystemExit(f"window and group-by forms disagree: {unmatched} unmatched and "
                         f"{different} different nodes of {compared}, e.g. {example}")
    return {"nodes_checked_equal": compared, "checked_every": every}


def side_by_side(root: Path, questions: int, repeat: int, every: int) -> dict:
    """Build one partition, time every form ``repeat`` times (interleaved), keep each form's
    best run, check the window and group-by outputs agree."""
    build(root, questions)
    runs: dict[str, list[dict]] = {form: [] for form in FORMS}
    for _ in range(repeat):
        for form in FORMS:
            runs[form].append(measure(root, form))
    best = {form: min(results, key=lambda r: r["seconds"]) for form, results in runs.items()}
    rows = {form: r["rows"] for form, r in best.items()}
    if len(set(rows.values())) != 1:
        raise SystemExit(f"the forms wrote different row counts: {rows}")
    seconds = {form: r["seconds"] for form, r in best.items()}
    window_over_groupby = seconds["window_parquet"] / seconds["groupby"]
    delta_over_parquet = seconds["window"] / seconds["window_parquet"]
    return {
        "questions": questions, "leaves": questions * 27, "nodes": rows["window"],
        "seconds": seconds,
        "window_over_groupby": window_over_groupby,
        "window_over_groupby_target": TARGET_WINDOW_OVER_GROUPBY,
        "window_within_target": window_over_groupby <= TARGET_WINDOW_OVER_GROUPBY,
        "delta_over_parquet": delta_over_parquet,
        "delta_over_parquet_target": TARGET_DELTA_OVER_PARQUET,
        "delta_within_target": delta_over_parquet <= TARGET_DELTA_OVER_PARQUET,
        "cpu_delta_over_parquet": (best["window"]["cpu_seconds"]
                                   / best["window_parquet"]["cpu_seconds"]),
        "window_over_io_bound": seconds["window_parquet"] / seconds["io_bound"],
        "groupby_over_io_bound": seconds["groupby"] / seconds["io_bound"],
        "window_nodes_per_s": rows["window"] / seconds["window"],
        # CPU seconds of the same runs (all DuckDB threads): steadier than wall time on a
        # shared machine, where the wall-time ratios above can swing
        "cpu_seconds": {form: r["cpu_seconds"] for form, r in best.items()},
        "cpu_window_over_groupby": (best["window_parquet"]["cpu_seconds"]
                                    / best["groupby"]["cpu_seconds"]),
        "cpu_window_over_io_bound": (best["window_parquet"]["cpu_seconds"]
                                     / best["io_bound"]["cpu_seconds"]),
        "peak_gib": {form: r["peak_bytes"] / 2**30 for form, r in best.items()},
        "runs_per_form": repeat,
        **compare(root, every),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=100_000,
                        help="a smaller partition on which every node is checked equal")
    parser.add_argument("--repeat", type=int, default=3, help="runs per form; best one kept")
    parser.add_argument("--sample-every", type=int, default=1000,
                        help="check one node in this many at the --questions size")
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory(prefix="credit-bench-") as tmp:
        report["subset"] = side_by_side(Path(tmp) / "subset", args.subset, args.repeat, 1)
        report["full"] = side_by_side(Path(tmp) / "full", args.questions, args.repeat,
                                      args.sample_every)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
