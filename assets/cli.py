"""The ``malt-lake`` command: the library's commands plus the Dagster-backed ones."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from assets import pipeline, runner
from assets.rounds import check_round
from assets.study import STUDY_PROJECT, StudyPlan
from malt_lake import storage
from malt_lake.cli import RoundOption, app, console, current_lake, print_frame, run
from malt_lake.lake import Lake
from malt_lake.query import run_read_only
from malt_lake.settings import BUILTIN_PROJECTS, is_source_checkout


@app.command()
def ingest(
    dataset: Annotated[
        list[str] | None, typer.Option(help="Only these datasets (repeatable); default all.")
    ] = None,
    round_index: RoundOption = 1,
) -> None:
    """Validate the configured datasets, register their shards and write their questions."""
    started = time.perf_counter()
    keys = pipeline.ingest(dataset, lambda message: None, round_index)
    console.print(f"ingested {len(keys)} partition(s) in {time.perf_counter() - started:.1f}s")


@app.command()
def materialize(
    select: Annotated[str, typer.Option(
        help="Comma-separated asset names or jobs (assets/jobs.py; a job runs under its "
             "name): expansion (G, V, R), tree (everything after questions), relabel or cheap "
             "(credit + role datasets), role_datasets, adapters (the three LoRA adapters of a "
             "dataset), evaluate.")],
    partition: Annotated[list[str] | None, typer.Option(
        help="Shard partition(s), e.g. arith.train.0000 (repeatable).")] = None,
    all_train: Annotated[bool, typer.Option(
        "--all-train", help="Every registered partition of a 'train' split, as one Dagster "
                            "backfill (a run per shard, side by side under the instance's "
                            "limits).")] = False,
    dataset: Annotated[list[str] | None, typer.Option(
        help="Dataset(s) whose adapters to train or evaluate (repeatable); default every "
             "configured one.")] = None,
    theta: Annotated[float | None, typer.Option(help="Credit threshold in (0, 1).")] = None,
    n: Annotated[int | None, typer.Option(help="Branching factor for G, V and R.")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="Most new tokens per sample for every role (expansion and evaluation); default "
             "the dataset's token budgets.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    batch_prompts: Annotated[int | None, typer.Option(
        help="Parents per checkpointed batch.")] = None,
    adapter: Annotated[str | None, typer.Option(
        help="LoRA adapter dir the selected expansion assets generate with.")] = None,
    recipe: Annotated[str | None, typer.Option(
        help="Training recipe name or TOML path (default: by MALT_ENV / MALT_RECIPE).")] = None,
    train_steps: Annotated[int | None, typer.Option(
        help="Cap every training stage at this many steps.")] = None,
    force_train: Annotated[bool, typer.Option(
        "--force-train", help="Retrain adapters even if identical ones exist.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Evaluation seeds.")] = None,
    eval_limit: Annotated[int | None, typer.Option(
        help="Held-out questions per seed: a random subset drawn anew for each seed.")] = None,
    pool: Annotated[bool, typer.Option(
        "--pool", help="Train each adapter on every dataset's role data (pooled) instead of "
                       "its own dataset's.")] = False,
    round_index: RoundOption = 1,
) -> None:
    """Materialize assets: shard assets per --partition, adapters and evaluation per
    dataset. E.g. credit with another theta: --select cheap --partition ... --theta 0.7."""
    selection = runner.expand_selection([s.strip() for s in select.split(",") if s.strip()])
    if theta is not None:
        from malt_lake.credit import validate_theta

        validate_theta(theta)
    overrides = _given(n=n, max_tokens=max_tokens, temperature=temperature,
                       batch_prompts=batch_prompts, adapter=adapter)
    config = runner.run_config_for(
        theta, overrides, selection,
        train=_given(recipe=recipe, max_steps=train_steps, force=force_train or None,
                     pool=pool or None),
        evaluation=_given(seeds=seeds, limit=eval_limit, max_tokens=max_tokens,
                          temperature=temperature))
    groups: dict[str | None, list[str]] = {}
    for asset in selection:
        groups.setdefault(runner.partitioning(asset), []).append(asset)
    shard_keys = list(partition or [])
    if all_train:
        shard_keys += [k for k in runner.registered_partitions() if k.split(".")[1] == "train"]
    if "shards" in groups and not shard_keys:
        raise typer.BadParameter(f"{', '.join(groups['shards'])} need --partition or "
                                 "--all-train", param_hint="--partition")
    datasets = list(dataset or runner.registered_partitions(kind="datasets"))
    if all_train and "shards" in groups:
        _backfill(groups.pop("shards"), shard_keys, config, round_index)
    plan = [("shards", shard_keys), (None, [None]), ("datasets", datasets)]
    for kind, keys in plan:
        for key in keys if kind in groups else []:
            started = time.perf_counter()
            runner.materialize(groups[kind], key, config, round_index=round_index)
            console.print(f"materialized {', '.join(groups[kind])}"
                          + (f" for {key}" if key else "")
                          + (f" in round {round_index}" if round_index > 1 else "")
                          + f" in {time.perf_counter() - started:.1f}s")


def _backfill(selection: list[str], keys: list[str], config: dict, round_index: int) -> None:
    """The shard assets over ``keys`` as one Dagster backfill, waited for."""
    from assets.backfill import run_backfill

    instance = runner.instance()
    for key in keys:
        runner.check_partition(instance, "shards", key)
    started = time.perf_counter()
    runs = run_backfill(instance, selection, keys, runner.round_config(config, round_index),
                        console.print, round_index)
    console.print(f"materialized {', '.join(selection)} for {len(runs)} shard(s)"
                  + (f" in round {round_index}" if round_index > 1 else "")
                  + f" in {time.perf_counter() - started:.1f}s (one run per shard)")


def _given(**values):
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port for the Dagster UI.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address; keep loopback on shared boxes.")]
    = "127.0.0.1",
) -> None:
    """Open the Dagster UI (asset graph, partitions, metadata, run history). While it runs,
    CLI runs of this machine that died are failed and their accelerator slots freed, so the
    UI's runs never wait for a dead process."""
    from assets.concurrency import releasing_dead_runs

    env = {**os.environ, "DAGSTER_HOME": str(runner.dagster_home())}
    console.print(f"Dagster UI on http://{host}:{port} (Ctrl-C to stop)")
    with releasing_dead_runs(runner.instance()):
        subprocess.run([sys.executable, "-m", "dagster", "dev", "-m", "assets.definitions",
                        "-h", host, "-p", str(port)], env=env, check=False)


DEMO_DATASET = "arith"
# how the printed hints call the CLI: the checkout's venv, or an installed package's command
CLI = ".venv/bin/malt-lake" if is_source_checkout() else "malt-lake"


@app.command()
def demo(
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per sample.")] = 128,
    n: Annotated[int, typer.Option(help="Branching factor (27 leaves per question at 3).")] = 3,
    train_shards: Annotated[int, typer.Option(
        help="Training shards to expand (16 questions each).")] = 1,
    seeds: Annotated[int, typer.Option(help="Evaluation seeds (mean ± std).")] = 2,
    eval_limit: Annotated[int | None, typer.Option(
        help="Held-out questions per seed, a random subset drawn anew for each seed "
             "(0: all).")] = 12,
    train_steps: Annotated[int | None, typer.Option(
        help="Cap every training stage at this many steps (default: the recipe's).")] = None,
    rounds: Annotated[int, typer.Option(
        min=1, help="MALT rounds; round i+1 expands with round i's adapters.")] = 1,
    ablations: Annotated[bool, typer.Option(
        help="Also evaluate the paper's ablations (only G trained, only V and R, V and R "
             "with SFT alone).")] = False,
) -> None:
    """The main job on the embedded default: ingest the built-in arithmetic set, expand MALT
    trees with the embedded model, assign credit, build role datasets, train the three LoRA
    adapters and compare SA, MA and MALT (each ± majority vote) on held-out questions."""
    lake = current_lake()
    started = time.perf_counter()
    pipeline.ingest([DEMO_DATASET], console.print)
    train = [k for k in runner.registered_partitions()
             if k.startswith(f"{DEMO_DATASET}.train.")][:train_shards]
    plan = pipeline.RoundPlan(train_partitions=train, datasets=[DEMO_DATASET], n=n,
                              max_tokens=max_tokens, seeds=seeds, eval_limit=eval_limit or None,
                              train_steps=train_steps, ablations=ablations)
    results = _rounds(plan, rounds)
    _print_tree_analytics(lake)
    for result in results:
        console.print(f"\n[bold]Held-out accuracy, round {result.index}[/bold] "
                      f"({result.warehouse})")
        print_frame(_summary_frame(result.summaries[DEMO_DATASET]), limit=20)
        _print_comparisons(result.comparisons[DEMO_DATASET])
    _print_truncation(results[-1].warehouse)
    report = Lake(results[-1].warehouse).storage.uri("reports", f"eval-{DEMO_DATASET}.md")
    console.print(
        f"\nDone in {time.perf_counter() - started:.0f}s.\n"
        f"Lake:             {lake.tables_uri}   (Delta tables; polars: "
        f"pl.scan_delta(\"{lake.table_uri('credit')}\"))\n"
        f"Report:           {report} (+ .png chart)\n"
        f"Adapters:         {lake.storage.uri('adapters')}\n"
        f"Open the UI:      {CLI} ui   (then http://127.0.0.1:3000, Assets)\n"
        f"Query the trees:  {CLI} sql \"select node_id, role, value, label "
        "from credit order by node_id limit 20\"\n"
        f"One tree:         {CLI} tree {_first_question(lake, train)}\n"
        f"Predictions:      {CLI} sql \"select system, avg(correct::int) acc "
        "from eval_predictions group by all order by all\"\n"
        f"Change theta:     {CLI} materialize --select relabel --partition "
        f"{train[0]} --theta 0.7   (no model calls; the old labels stay a credit version:\n"
        f"                  {CLI} sql \"select * from lake_versions where "
        "table_name = 'credit'\", then --as-of credit=<version>)\n"
        f"Plain files:      {CLI} export sft_refiner --to sft_refiner.jsonl\n"
    )


@app.command()
def study(
    warehouse: Annotated[str | None, typer.Option(
        help="The study's lake and Dagster instance (default: <warehouse>/study).")] = None,
    config: Annotated[str, typer.Option(
        help="Project: the built-in 'study' or a TOML file (e.g. "
             "configs/shared-datasets.toml).")] = STUDY_PROJECT,
    dataset: Annotated[str, typer.Option(help="The dataset to study.")] = StudyPlan.dataset,
    train_shards: Annotated[int | None, typer.Option(
        help="Training shards to expand (default all; the built-in study has 2 of 32 "
             "questions).")] = None,
    seeds: Annotated[int, typer.Option(help="Evaluation seeds.")] = StudyPlan.seeds,
    eval_limit: Annotated[int, typer.Option(
        help="Held-out questions per seed (0: the whole held-out split).")] = 0,
    n: Annotated[int, typer.Option(help="Branching factor.")] = StudyPlan.n,
    theta: Annotated[float, typer.Option(help="Credit threshold.")] = StudyPlan.theta,
    max_tokens: Annotated[int | None, typer.Option(
        help="Most new tokens per turn; default the dataset's budgets.")] = None,
    recipe: Annotated[str, typer.Option(
        help="Training recipe name or TOML path.")] = StudyPlan.recipe,
    train_steps: Annotated[int | None, typer.Option(
        help="Cap every training stage (default: the recipe's).")] = None,
    ablations: Annotated[bool, typer.Option(
        help="Also evaluate the paper's ablations (only G trained, only V and R, V and R "
             "with SFT alone).")] = False,
) -> None:
    """The whole method at a CPU scale on the built-in arithmetic (64 training questions,
    200 held-out), then a report: SA, MA and MALT (each with MV@3) with paired bootstrap
    intervals, and the diagnostics that explain the outcome. A rerun resumes."""
    from assets.study import goal_lines, run_study

    root = Lake(warehouse or storage.join(current_lake().location, "study")).location
    os.environ["MALT_WAREHOUSE"] = str(root)
    os.environ["MALT_CONFIG"] = (config if config in BUILTIN_PROJECTS
                                 else str(Path(config).expanduser().resolve()))
    # its own instance, whatever DAGSTER_HOME says: another project's instance holds other
    # partitions under the same keys (arith.train.0000 of the demo is not the study's)
    os.environ["DAGSTER_HOME"] = str(Lake(root).root / "dagster")
    plan = StudyPlan(dataset=dataset, train_shards=train_shards, n=n, theta=theta, seeds=seeds,
                     eval_limit=eval_limit or None, max_tokens=max_tokens, recipe=recipe,
                     train_steps=train_steps, ablations=ablations)
    result = run_study(plan, console.print)
    console.print(f"\n[bold]Held-out accuracy[/bold] ({root})")
    print_frame(_summary_frame(result.summary), limit=20)
    _print_comparisons(result.comparisons)
    for line in goal_lines(result.comparisons):
        console.print(f"[bold]{line}[/bold]")
    _print_truncation(root)
    env = (f"MALT_WAREHOUSE={root} MALT_CONFIG={os.environ['MALT_CONFIG']} "
           f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    console.print(
        f"\nDone in {sum(result.phases.values()):.0f}s ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in result.phases.items()) + ").\n"
        f"Study report:  {result.report}\n"
        f"Evaluation:    {Lake(root).storage.uri('reports', f'eval-{dataset}.md')} "
        "(+ .png chart)\n"
        f"Open the UI:   {env} {CLI} ui\n"
        f"Query:         {env} {CLI} sql \"select * from eval_comparisons\"\n"
        "Run it again to resume after an interruption; --theta re-labels the stored trees.")


@app.command(name="rounds")
def rounds_command(
    k: Annotated[int, typer.Option("--k", min=1, help="Number of rounds.")] = 2,
    max_tokens: Annotated[int | None, typer.Option(
        help="Most new tokens per sample for every role; default the dataset budgets.")] = None,
    n: Annotated[int, typer.Option(help="Branching factor.")] = 3,
    seeds: Annotated[int, typer.Option(help="Evaluation seeds.")] = 2,
    train_steps: Annotated[int | None, typer.Option(help="Cap every training stage.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="Datasets (repeatable); default every configured one.")] = None,
) -> None:
    """Iterative MALT: k rounds, round i+1 expanding its trees with round i's adapters; round
    i >= 2 is the assets round_<i>/... (jobs round_<i>_tree, ...) with its own lake under
    <warehouse>/rounds/round-<i> and its own evaluation."""
    keys = pipeline.ingest(dataset, console.print)
    datasets = dataset or runner.registered_partitions(kind="datasets")
    plan = pipeline.RoundPlan(train_partitions=[x for x in keys if x.split(".")[1] == "train"],
                              datasets=list(datasets), n=n, max_tokens=max_tokens,
                              seeds=seeds, train_steps=train_steps)
    for result in _rounds(plan, k):
        for name, table in result.summaries.items():
            console.print(f"\n[bold]{name}, round {result.index}[/bold] ({result.warehouse})")
            print_frame(_summary_frame(table), limit=20)
            _print_comparisons(result.comparisons[name])


def _rounds(plan: pipeline.RoundPlan, k: int) -> list[pipeline.RoundResult]:
    from assets.definitions import DEFINED_ROUNDS

    check_round(k, DEFINED_ROUNDS)  # before round 1 runs for an hour
    return [pipeline.run_round(index, plan, console.print) for index in range(1, k + 1)]


def _summary_frame(table):
    import polars as pl

    frame = pl.from_arrow(table)
    return frame.select(
        "system",
        (pl.col("accuracy_mean") * 100).round(1).alias("accuracy_%"),
        (pl.col("accuracy_std") * 100).round(1).alias("std_%"),
        "seeds", "predictions")


def _print_comparisons(table) -> None:
    """The paired differences with their intervals, and plainly which are within noise."""
    from malt_lake.report import points

    rows = table.to_pylist()
    if not rows:
        return
    console.print(f"Paired differences ({rows[0]['level']:.0%} bootstrap interval over "
                  "questions and seeds):")
    for r in rows:
        console.print(f"  {r['system'] + ' − ' + r['baseline']:<28} {points(r['difference'])}"
                      f"  [{points(r['ci_low'])}, {points(r['ci_high'])}]  {r['verdict']}")
    noise = [f"{r['system']} vs {r['baseline']}" for r in rows if r["verdict"] == "within noise"]
    if noise:
        console.print(f"  Within noise (the interval holds 0): {', '.join(noise)}. "
                      f"More held-out questions or seeds narrow the intervals.")


def _print_tree_analytics(lake) -> None:
    import polars as pl

    for title, query in [
        ("Accuracy per role turn (training trees)", "select * from accuracy_by_turn"),
        ("How the refiner changed the generator's answers", "select * from flips"),
        ("Positive nodes per role at theta", "select * from positive_rate"),
        ("Role datasets", "select * from pairs_per_role"),
    ]:
        console.print(f"\n[bold]{title}[/bold]")
        print_frame(pl.from_arrow(run_read_only(lake, query)), limit=50)


def _print_truncation(warehouse) -> None:
    """One line per stage: how many samples hit their token budget (scored only on a complete
    explicit answer marker), then the per-role table."""
    import polars as pl

    table = pl.from_arrow(run_read_only(Lake(warehouse), "select * from truncation"))
    console.print("\n[bold]Truncation[/bold] (samples that hit their token budget)")
    for stage in table.get_column("stage").unique(maintain_order=True).to_list():
        part = table.filter(pl.col("stage") == stage)
        share = part["truncated"].sum() / max(part["samples"].sum(), 1)
        roles = ", ".join(f"{r['role']} {r['truncation_rate']:.0%}" for r in part.to_dicts())
        console.print(f"  {stage}: {share:.1%} of {part['samples'].sum()} samples ({roles})")


def _first_question(lake, train: list[str]) -> str:
    rows = run_read_only(lake, "select min(question_id) q from generations").to_pylist()
    return rows[0]["q"] if rows and rows[0]["q"] else "<question_id>"


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
