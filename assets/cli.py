"""The ``malt-lake`` command: the library's commands plus the Dagster-backed ones."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.progress import Progress

from assets import runner
from malt_lake.cli import app, console, current_lake, print_frame, run
from malt_lake.query import run_read_only


@app.command()
def ingest(
    dataset: Annotated[
        list[str] | None, typer.Option(help="Only these datasets (repeatable); default all.")
    ] = None,
) -> None:
    """Validate the configured datasets, register their shards and write their questions."""
    started = time.perf_counter()
    runner.materialize(["dataset_catalog"])
    keys = [k for k in runner.registered_partitions()
            if not dataset or k.split(".", 1)[0] in dataset]
    with Progress(console=console) as progress:
        task = progress.add_task("questions", total=len(keys))
        for key in keys:
            runner.materialize(["questions"], partition_key=key)
            progress.advance(task)
    console.print(f"ingested {len(keys)} partition(s) in {time.perf_counter() - started:.1f}s")


@app.command()
def materialize(
    select: Annotated[str, typer.Option(
        help="Comma-separated asset names or aliases: expansion (G, V, R), cheap (credit + "
             "role datasets), role_datasets, tree (everything after questions).")],
    partition: Annotated[list[str] | None, typer.Option(
        help="Partition key(s), e.g. arith.train.0000 (repeatable).")] = None,
    all_train: Annotated[bool, typer.Option(
        "--all-train", help="Every registered partition of a 'train' split.")] = False,
    theta: Annotated[float | None, typer.Option(help="Credit threshold in (0, 1).")] = None,
    n: Annotated[int | None, typer.Option(help="Branching factor for G, V and R.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most new tokens per sample.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    batch_prompts: Annotated[int | None, typer.Option(
        help="Parents per checkpointed batch.")] = None,
) -> None:
    """Materialize assets for partitions, e.g. credit with another theta (no model calls)."""
    selection = runner.expand_selection([s.strip() for s in select.split(",") if s.strip()])
    if theta is not None:
        from malt_lake.credit import validate_theta

        validate_theta(theta)
    overrides = {k: v for k, v in {"n": n, "max_tokens": max_tokens, "temperature": temperature,
                                   "batch_prompts": batch_prompts}.items() if v is not None}
    config = runner.run_config_for(theta, overrides, selection)
    keys = list(partition or [])
    if all_train:
        keys += [k for k in runner.registered_partitions() if k.split(".")[1] == "train"]
    for key in keys or [None]:
        started = time.perf_counter()
        runner.materialize(selection, key, config)
        console.print(f"materialized {', '.join(selection)}"
                      + (f" for {key}" if key else "")
                      + f" in {time.perf_counter() - started:.1f}s")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port for the Dagster UI.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address; keep loopback on shared boxes.")]
    = "127.0.0.1",
) -> None:
    """Open the Dagster UI (asset graph, partitions, metadata, run history)."""
    env = {**os.environ, "DAGSTER_HOME": str(runner.dagster_home())}
    console.print(f"Dagster UI on http://{host}:{port} (Ctrl-C to stop)")
    subprocess.run([sys.executable, "-m", "dagster", "dev", "-m", "assets.definitions",
                    "-h", host, "-p", str(port)], env=env, check=False)


DEMO_PARTITION = "arith.train.0000"


@app.command()
def demo(
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per sample.")] = 128,
    n: Annotated[int, typer.Option(help="Branching factor (27 leaves per question at 3).")] = 3,
) -> None:
    """The main job on the embedded default: ingest the built-in arithmetic set, expand one
    train shard as MALT trees with the embedded model, assign credit, build role datasets."""
    import polars as pl

    lake = current_lake()
    started = time.perf_counter()
    ingest(dataset=None)
    console.print(f"[bold]expanding {DEMO_PARTITION}[/bold] with the embedded model "
                  f"(n={n}, max_tokens={max_tokens}); progress bars below")
    selection = runner.expand_selection(["tree"])
    runner.materialize(selection, DEMO_PARTITION, runner.run_config_for(
        0.5, {"n": n, "max_tokens": max_tokens}, selection))
    for title, query in [
        ("Accuracy per role turn", "select * from accuracy_by_turn"),
        ("How the refiner changed the generator's answers", "select * from flips"),
        ("Positive nodes per role at theta", "select * from positive_rate"),
        ("Role datasets", "select * from pairs_per_role"),
    ]:
        console.print(f"\n[bold]{title}[/bold]")
        print_frame(pl.from_arrow(run_read_only(lake, query)), limit=50)
    console.print(
        f"\nDone in {time.perf_counter() - started:.0f}s. Lake: {lake.tables_dir}\n"
        "Open the UI:      .venv/bin/malt-lake ui   (then http://127.0.0.1:3000)\n"
        "Query the trees:  .venv/bin/malt-lake sql \"select node_id, role, value, label "
        "from credit order by node_id limit 20\"\n"
        f"Change theta:     .venv/bin/malt-lake materialize --select cheap --partition "
        f"{DEMO_PARTITION} --theta 0.7   (no model calls)\n"
    )


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
