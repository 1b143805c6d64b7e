"""What a θ change costs against what it saves: one partition's tree generated with the
embedded model (the three expansion roles, timed), then the θ change the `relabel` job runs
(credit at a new θ and the six role datasets, each committed as a Delta version, timed the
same way, best of ``--repeat``). Target: the θ change under 1 % of the generation time.
It prints the day's bf16 matmul rate at the model's shapes (measured right before the
generation) beside it, since the generation time, the denominator, scales with it.

    .venv/bin/python bench/theta_bench.py --questions 16 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from expansion_bench import ceiling_measurements

from malt_lake.backends.transformers_backend import TransformersBackend
from malt_lake.credit import compute_credit_to_lake, role_datasets
from malt_lake.expand import RoleSettings, expand
from malt_lake.ingest import build_catalog, shard_questions, write_catalog
from malt_lake.lake import Lake
from malt_lake.names import ROLES, PartitionKey
from malt_lake.scoring import leaf_rewards
from malt_lake.settings import ArithmeticSource, DatasetSpec, ProjectSettings

KEY = PartitionKey("arith", "train", 0)
TARGET = 0.01


def generate_tree(lake: Lake, questions: int, n: int, max_tokens: int) -> tuple[float, float]:
    """Ingest one partition and expand G, V, R with the embedded model; the seconds taken
    by the expansion (what a θ change must not repeat) and the matmul rate (GFLOP/s, the
    expansion bench's shape mix) measured right before it."""
    settings = ProjectSettings(datasets=[DatasetSpec(
        name=KEY.dataset, family="numeric", shard_size=questions,
        splits={KEY.split: ArithmeticSource(count=questions, seed=0)})])
    write_catalog(lake, build_catalog(settings))
    lake.write_partition("questions", KEY, shard_questions(lake, settings, KEY))
    backend = TransformersBackend("embedded")
    gflops = ceiling_measurements(backend.model, backend.max_batch_rows)["shape_mix"]
    started = time.perf_counter()
    for role in ROLES:
        expand(lake, KEY, role, backend, RoleSettings(n=n, max_tokens=max_tokens),
               show_progress=False)
    seconds = time.perf_counter() - started
    lake.write_partition("leaf_rewards", KEY, leaf_rewards(lake, KEY))
    return seconds, gflops


def relabel(lake: Lake, theta: float) -> float:
    """The relabel job's work for one partition: credit at ``theta``, then the role datasets,
    every table committed (as the assets do)."""
    started = time.perf_counter()
    compute_credit_to_lake(lake, KEY, theta)
    for name, table in role_datasets(lake, KEY).items():
        lake.write_partition(name, KEY, table, info={"malt.theta": str(theta)})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="theta-bench-") as tmp:
        lake = Lake(tmp)
        lake.create_tables()
        generation, gflops = generate_tree(lake, args.questions, args.n, args.max_tokens)
        relabel(lake, 0.5)  # the first credit of the partition (not a change)
        runs = [relabel(lake, theta) for theta in [0.2, 0.5] * args.repeat]
        nodes = lake.read_required("credit", KEY, ["node_id"]).num_rows
        versions = lake.version("credit")
    best = min(runs)
    print(json.dumps({
        "questions": args.questions, "n": args.n, "max_tokens": args.max_tokens,
        "tree_nodes": nodes, "generation_seconds": generation,
        "matmul_gflops_shape_mix": gflops,
        "theta_change_seconds": best, "theta_change_runs": runs,
        "theta_change_over_generation": best / generation, "target": TARGET,
        "within_target": best / generation <= TARGET, "credit_versions": versions,
    }, indent=2))


if __name__ == "__main__":
    main()
