"""Credit benchmark: the window-form credit statement vs the group-by form and the I/O bound.

Builds synthetic trees (N questions x 27 leaves) as one lake partition, then runs three
statements over it, each in its own process (so peak memory is its own) and each through the
same harness the credit asset uses (a DuckDB connection over the lake's views, the statement
streamed to a zstd Parquet file by ``sql/credit/write.sql``):

- ``window``: ``sql/credit/verifier_values.sql`` then ``sql/credit/credit.sql``, what the
  credit asset runs (window aggregations, ``malt_lake.credit.credit_relation``);
- ``groupby``: ``bench/sql/credit_groupby.sql``, the earlier group-by form (the baseline);
- ``io_bound``: ``bench/sql/credit_io_bound.sql``, which reads the same leaf rows, critiques and
  generations and writes as many node rows with the same columns, without aggregating: no
  credit statement can be faster than reading its input and writing its output.

It prints, per partition, the seconds of each (best of ``--repeat`` runs) and the two ratios
that matter: ``window_over_groupby`` (target: at most 1.25) and ``window_over_io_bound``, in
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
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from malt_lake.credit import credit_relation
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.query import connect
from malt_lake.sqlfiles import read_sql

KEY = PartitionKey("bench", "train", 0)
THETA = 0.5
TARGET_WINDOW_OVER_GROUPBY = 1.25
BENCH_SQL = Path(__file__).parent / "sql"
FORMS = ("groupby", "window", "io_bound")
INPUT_TABLES = ("generations", "critiques", "leaf_rewards")


def statement(form: str) -> str:
    """The SQL text of a baseline form (the window form is the product's own statements)."""
    return (BENCH_SQL / f"credit_{form}.sql").read_text()


def build(root: Path, questions: int) -> None:
    """Write leaf_rewards, refinements, critiques and generations for one partition."""
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
        path = lake.partition_file(table, KEY)
        path.parent.mkdir(parents=True, exist_ok=True)
        relation.write_parquet(str(path))
    con.close()


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
    con = connect(lake, derived=False, tables=INPUT_TABLES)
    try:
        con.execute("set preserve_insertion_order = false")
        if form == "window":  # the product's own two statements
            relation = credit_relation(con, KEY, THETA)
        else:
            relation = con.sql(statement(form), params={"dataset": KEY.dataset,
                                                        "shard": KEY.shard, "theta": THETA})
        relation.create_view("credit_result")
        con.execute(read_sql("credit/write"), {"path": str(out)})
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
            "left": str(output_file(root, "window")), "right": str(output_file(root, "groupby")),
            "every": every}).fetchall()
    finally:
        con.close()
    compared, unmatched, different, example = rows[0]
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
    window_over_groupby = seconds["window"] / seconds["groupby"]
    return {
        "questions": questions, "leaves": questions * 27, "nodes": rows["window"],
        "seconds": seconds,
        "window_over_groupby": window_over_groupby,
        "window_over_groupby_target": TARGET_WINDOW_OVER_GROUPBY,
        "window_within_target": window_over_groupby <= TARGET_WINDOW_OVER_GROUPBY,
        "window_over_io_bound": seconds["window"] / seconds["io_bound"],
        "groupby_over_io_bound": seconds["groupby"] / seconds["io_bound"],
        "window_nodes_per_s": rows["window"] / seconds["window"],
        # CPU seconds of the same runs (all DuckDB threads): steadier than wall time on a
        # shared machine, where the wall-time ratios above can swing
        "cpu_seconds": {form: r["cpu_seconds"] for form, r in best.items()},
        "cpu_window_over_groupby": best["window"]["cpu_seconds"] / best["groupby"]["cpu_seconds"],
        "cpu_window_over_io_bound": (best["window"]["cpu_seconds"]
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
