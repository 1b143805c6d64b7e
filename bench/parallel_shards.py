"""Two shards' trees, serial vs in parallel, through the CLI and the Dagster instance.

Serial: one `malt-lake materialize --select tree` over both shards (one process, one run after
the other). Parallel: two such processes at once, one shard each, against the same instance
and lake. Backfill: `materialize --select tree --all-train`, one Dagster backfill whose runs
(one per shard, each its own process) a daemon launches under the instance's limits. The
fake backend sleeps ``--delay`` seconds per generation batch in place of the model's time, so
the accelerator pool's limit decides what overlaps: with one slot (the laptop default: one
model in memory) only the steps around the model overlap (in-process CLI runs; the run queue
starts a backfill's next run only once a slot is free), with two slots (two accelerators) the
expansions do too. Each case runs on a fresh warehouse.

    .venv/bin/python bench/parallel_shards.py --delay 1.0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(REPO / ".venv" / "bin" / "malt-lake")
SHARDS = ("arith.train.0000", "arith.train.0001")


def prepared(root: Path, delay: float, slots: int) -> dict[str, str]:
    """A fresh warehouse with the shards registered and the pool set to ``slots``."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("MALT_CONFIG", "MALT_ROUNDS")},
           "MALT_WAREHOUSE": str(root), "DAGSTER_HOME": str(root / "dagster"),
           "MALT_ENV": "test", "MALT_FAKE_DELAY_S": str(delay)}
    subprocess.run([CLI, "ingest"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "dagster", "instance", "concurrency", "set",
                    "malt_accelerator", str(slots)], env=env, check=True, capture_output=True)
    return env


def serial(env: dict[str, str]) -> float:
    started = time.perf_counter()
    args = [a for shard in SHARDS for a in ("--partition", shard)]
    subprocess.run([CLI, "materialize", "--select", "tree", *args], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def parallel(env: dict[str, str]) -> float:
    started = time.perf_counter()
    workers = [subprocess.Popen([CLI, "materialize", "--select", "tree", "--partition", shard],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for shard in SHARDS]
    for worker in workers:
        _, err = worker.communicate()
        if worker.returncode:
            raise SystemExit(err.decode())
    return time.perf_counter() - started


def backfill(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([CLI, "materialize", "--select", "tree", "--all-train"], env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0,
                        help="seconds the fake backend sleeps per generation batch")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as temp:
        for slots in (1, 2):
            for name, run in (("serial", serial), ("parallel", parallel),
                              ("backfill", backfill)):
                root = Path(temp) / f"{name}-{slots}"
                results[name, slots] = run(prepared(root, args.delay, slots))
                print(f"{name:8} pool {slots}: {results[name, slots]:6.1f} s", flush=True)
    for slots in (1, 2):
        print(f"pool {slots}: serial / parallel "
              f"{results['serial', slots] / results['parallel', slots]:.2f}x, serial / backfill "
              f"{results['serial', slots] / results['backfill', slots]:.2f}x")


if __name__ == "__main__":
    main()
