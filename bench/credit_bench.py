"""Credit assignment benchmark: the DuckDB SQL path vs plain Python, same formulas.

Builds N synthetic questions x 27 leaves as one lake partition, then, each in its own
process (so peak memory is its own): the SQL path (``compute_credit`` streamed to a Parquet
partition, exactly what the credit asset runs) on all N; and both paths on a subset for a
side-by-side rows/s ratio, checked equal on a sample of nodes. The SQL side also times its
statement alone, counted instead of written (after its peak memory is read), to show how
much of its time is the Parquet write.

    .venv/bin/python bench/credit_bench.py --questions 1000000 --subset 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from malt_lake.credit import _credit_relation, compute_credit_to_lake
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey

KEY = PartitionKey("bench", "train", 0)
SYNTHETIC_SQL = (Path(__file__).parent / "sql" / "synthetic_leaves.sql").read_text()


def build(root: Path, questions: int) -> None:
    """Write leaf_rewards, refinements, critiques and generations for one partition."""
    lake = Lake(root)
    con = duckdb.connect()
    con.execute("set preserve_insertion_order = false")
    leaves = con.sql(SYNTHETIC_SQL, params={"questions": questions})
    leaves.to_table("leaves")
    for table, relation in [
        ("leaf_rewards", con.table("leaves")),
        ("refinements", con.table("leaves").select("dataset, shard, question_id, g_id, v_id, "
                                                   "r_id")),
        ("critiques", con.table("leaves").select("dataset, shard, question_id, g_id, v_id")
         .distinct()),
        ("generations", con.table("leaves").select("dataset, shard, question_id, g_id")
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


def sql_path(root: str, out: mp.Queue) -> None:
    started = time.perf_counter()
    rows = compute_credit_to_lake(Lake(root), KEY, 0.5)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    out.put({"rows": rows, "seconds": seconds, "peak_bytes": peak,
             "statement_only_seconds": statement_only_seconds(Lake(root))})


def statement_only_seconds(lake: Lake) -> float:
    """The credit statement with its result counted, not written: what the SQL path costs
    before any Parquet is written (a bound on how fast any writer could make it)."""
    started = time.perf_counter()
    con, relation = _credit_relation(lake, KEY, 0.5)
    try:
        relation.create_view("credit_statement")
        con.sql("select count(*) from credit_statement").fetchall()
    finally:
        con.close()
    return time.perf_counter() - started


def python_path(root: str, out: mp.Queue) -> None:
    """The same formulas in plain Python, doing the same job as the SQL path: read the
    partition's leaves and nodes from Parquet, compute, write the credit Parquet file."""
    lake = Lake(root)
    started = time.perf_counter()
    leaves = pq.read_table(lake.partition_file("leaf_rewards", KEY)).to_pylist()
    critiques = pq.read_table(lake.partition_file("critiques", KEY)).to_pylist()
    generations = pq.read_table(lake.partition_file("generations", KEY)).to_pylist()
    loaded = time.perf_counter()
    v_acc: dict[str, list] = {}
    rows = []
    for leaf in leaves:
        reward = leaf["reward"]
        value = None if reward is None else float(reward)
        rows.append((leaf["question_id"], leaf["r_id"], leaf["v_id"], "refiner", value, 0))
        if value is not None:
            acc = v_acc.setdefault(leaf["v_id"], [0.0, 0])
            acc[0] += value
            acc[1] += 1
    g_acc: dict[str, list] = {}
    for critique in critiques:
        total, count = v_acc.get(critique["v_id"], (0.0, 0))
        value = total / count if count else None
        rows.append((critique["question_id"], critique["v_id"], critique["g_id"], "verifier",
                     value, count))
        if value is not None:
            acc = g_acc.setdefault(critique["g_id"], [0.0, 0])
            acc[0] += value
            acc[1] += 1
    for generation in generations:
        total, count = g_acc.get(generation["g_id"], (0.0, 0))
        rows.append((generation["question_id"], generation["g_id"], generation["question_id"],
                     "generator", total / count if count else None, count))
    computed = time.perf_counter()
    columns = list(zip(*rows, strict=True))
    table = pa.table({
        "dataset": ["bench"] * len(rows), "shard": ["train.0000"] * len(rows),
        "question_id": columns[0], "node_id": columns[1], "parent_id": columns[2],
        "role": columns[3], "value": columns[4],
        "label": [None if v is None else v > 0.5 for v in columns[4]],
        "theta": [0.5] * len(rows), "n_children": columns[5],
    })
    pq.write_table(table, Path(root) / "python_credit.parquet", compression="zstd")
    seconds = time.perf_counter() - started
    values = {r[1]: (r[4], r[4] > 0.5, r[5]) for r in rows}
    sample = random.Random(0).sample(sorted(values), 2000)
    out.put({"rows": len(rows), "seconds": seconds,
             "compute_only_seconds": computed - loaded,
             "peak_bytes": peak_rss_bytes(),
             "sample": {k: values[k] for k in sample}})


def measure(target, root: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(str(root), queue))
    proc.start()
    while True:  # get before join: a child blocks on exit until its queued result is read
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise SystemExit(f"{target.__name__} failed (exit {proc.exitcode})") from None
    proc.join()
    return result


def sample_matches(root: Path, sample: dict) -> int:
    got = {r[0]: r[1:] for r in duckdb.sql(
        "select node_id, value, label, n_children from read_parquet($p) "
        "where node_id in (select unnest($ids))",
        params={"p": str(Lake(root).partition_file("credit", KEY)), "ids": list(sample)},
    ).fetchall()}
    bad = [k for k, (v, label, n) in sample.items()
           if k not in got or abs(got[k][0] - v) > 1e-9 or got[k][1] != label
           or got[k][2] != n]
    if bad:
        raise SystemExit(f"SQL and Python disagree on {len(bad)} sampled nodes, e.g. {bad[0]}")
    return len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=100_000)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory(prefix="credit-bench-") as tmp:
        small, full = Path(tmp) / "small", Path(tmp) / "full"
        build(small, args.subset)
        sql_small = measure(sql_path, small)
        py_small = measure(python_path, small)
        checked = sample_matches(small, py_small.pop("sample"))
        report["side_by_side"] = {
            "questions": args.subset, "nodes": sql_small["rows"],
            "sql_rows_per_s": sql_small["rows"] / sql_small["seconds"],
            "python_rows_per_s": py_small["rows"] / py_small["seconds"],
            "sql_seconds": sql_small["seconds"], "python_seconds": py_small["seconds"],
            "ratio_sql_over_python": py_small["seconds"] / sql_small["seconds"],
            "sql_statement_only_seconds": sql_small["statement_only_seconds"],
            "ratio_if_writing_were_free": (py_small["seconds"]
                                           / sql_small["statement_only_seconds"]),
            "python_compute_only_seconds": py_small["compute_only_seconds"],
            "sample_nodes_checked_equal": checked,
            "sql_peak_gib": sql_small["peak_bytes"] / 2**30,
            "python_peak_gib": py_small["peak_bytes"] / 2**30,
        }
        build(full, args.questions)
        sql_full = measure(sql_path, full)
        report["sql_full"] = {
            "questions": args.questions, "leaves": args.questions * 27,
            "nodes": sql_full["rows"], "seconds": sql_full["seconds"],
            "statement_only_seconds": sql_full["statement_only_seconds"],
            "rows_per_s": sql_full["rows"] / sql_full["seconds"],
            "peak_gib": sql_full["peak_bytes"] / 2**30,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
