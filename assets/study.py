"""``malt-lake study``: the whole method at a CPU scale, then a report that says whether
training helped, with intervals, ablations and the diagnostics that explain the outcome.

Every step is a Dagster materialization in the study's own lake and instance
(``<warehouse>/study`` by default), so the UI shows each one. A rerun resumes: questions and
tree tables already in the lake are not redone (a tree resumes at its first missing table,
and an expansion killed inside a role resumes from its batch checkpoints), adapters trained
on the same rows are reused by version; the evaluation runs again on every rerun.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from assets import runner
from malt_lake.errors import MaltLakeError
from malt_lake.evaluate import ROLES, stored_comparisons, summary
from malt_lake.lake import Lake
from malt_lake.markdown import to_markdown
from malt_lake.names import PartitionKey
from malt_lake.query import fetch, run_read_only
from malt_lake.report import comparisons_markdown, points
from malt_lake.settings import warehouse_root
from malt_lake.training.store import AdapterStore

STUDY_DATASET = "arith"
STUDY_PROJECT = "study"  # the built-in project settings of the study (malt_lake.settings)
STUDY_RECIPE = "cpu-study-smollm2"
Say = Callable[[str], None]


@dataclass(frozen=True)
class StudyPlan:
    """Sizes of the study (defaults and their reasons: README, "Does it work?")."""

    dataset: str = STUDY_DATASET
    train_shards: int | None = None  # None: every train shard of the dataset
    n: int = 3
    theta: float = 0.5
    seeds: int = 3
    eval_limit: int | None = None  # None: the whole held-out split
    max_tokens: int | None = None  # None: the dataset's token budgets
    recipe: str = STUDY_RECIPE
    train_steps: int | None = None  # None: the recipe's
    ablations: bool = False


@dataclass
class StudyResult:
    warehouse: Path | str
    report: Path
    phases: dict[str, float] = field(default_factory=dict)
    comparisons: pa.Table | None = None
    summary: pa.Table | None = None


def run_study(plan: StudyPlan, say: Say) -> StudyResult:
    """Ingest, expand, credit, role data, adapters, evaluation; then the study report, in
    the environment's warehouse (the study's own: ``malt-lake study`` sets it)."""
    warehouse = warehouse_root()
    lake = Lake(warehouse)
    phases: dict[str, float] = {}

    started = time.perf_counter()
    runner.materialize(["dataset_catalog"])
    dataset = plan.dataset
    keys = catalog_keys(lake, dataset)  # this project's shards, not every key the instance saw
    for key in keys:
        if not lake.has_partition("questions", PartitionKey.parse(key)):
            runner.materialize(["questions"], partition_key=key)
    phases["ingest"] = time.perf_counter() - started

    started = time.perf_counter()
    train = [k for k in keys if k.split(".")[1] == "train"]
    chosen = train[:plan.train_shards]
    tree = runner.expand_selection(["tree"])
    cheap = runner.expand_selection(["cheap"])
    sampling = {k: v for k, v in {"n": plan.n, "max_tokens": plan.max_tokens}.items()
                if v is not None}
    for key in train:  # training reads every train shard in the lake: all follow theta
        missing = [t for t in tree if not lake.has_partition(t, PartitionKey.parse(key))]
        if not missing:
            say(f"tree {key}: in the lake already; credit and role data at theta {plan.theta}")
            runner.materialize(cheap, key, runner.run_config_for(plan.theta, selection=cheap))
        elif key in chosen:
            # from the first missing table on: a finished role is not generated again
            todo = tree[tree.index(missing[0]):]
            say(f"[bold]expanding {key}[/bold] ({chosen.index(key) + 1}/{len(chosen)}, "
                f"n={plan.n}){'' if todo == tree else f': resuming at {todo[0]}'}")
            runner.materialize(todo, key, runner.run_config_for(plan.theta, sampling, todo))
    phases["expansion, rewards, credit, role data"] = time.perf_counter() - started

    started = time.perf_counter()
    adapters = runner.expand_selection(["adapters"])
    train_config = {k: v for k, v in {"recipe": plan.recipe,
                                      "max_steps": plan.train_steps}.items() if v is not None}
    say(f"[bold]training adapters[/bold] (recipe {plan.recipe})")
    runner.materialize(adapters, dataset,
                       runner.run_config_for(selection=adapters, train=train_config))
    phases["training"] = time.perf_counter() - started

    started = time.perf_counter()
    evaluation = {k: v for k, v in {"seeds": plan.seeds, "limit": plan.eval_limit,
                                    "max_tokens": plan.max_tokens,
                                    "ablations": plan.ablations or None}.items()
                  if v is not None}
    say(f"[bold]evaluating[/bold] ({plan.seeds} seeds, "
        f"{plan.eval_limit or 'every'} held-out question(s) per seed"
        f"{', with ablations' if plan.ablations else ''})")
    runner.materialize(["evaluation"], dataset, runner.run_config_for(
        selection=["evaluation"], evaluation=evaluation))
    phases["evaluation"] = time.perf_counter() - started

    result = StudyResult(warehouse, lake.root / "reports" / f"study-{dataset}.md",
                         phases, stored_comparisons(lake, dataset), summary(lake, dataset))
    write_study_report(lake, plan, result)
    return result


def catalog_keys(lake: Lake, dataset: str) -> list[str]:
    """The dataset's partition keys in the lake's shard catalog (the project as configured
    now; the Dagster instance keeps every key it was ever given)."""
    keys = fetch(lake, "inspect/partitions", {"dataset": dataset}
                 ).column("partition_key").to_pylist()
    if not keys:
        configured = sorted(set(fetch(lake, "inspect/partitions", {"dataset": None}
                                      ).column("dataset").to_pylist()))
        raise MaltLakeError(f"no partitions of dataset {dataset!r} in the study's project; "
                            f"configured: {', '.join(configured) or 'none'}")
    return keys


def goal_lines(comparisons: pa.Table) -> list[str]:
    """The study's question, answered from the intervals: does MALT+MV beat MA+MV (interval
    above 0), and is it not below SA+MV?"""
    rows = {(r["system"], r["baseline"]): r for r in comparisons.to_pylist()}
    lines = []
    versus_ma, versus_sa = rows.get(("MALT+MV", "MA+MV")), rows.get(("MALT+MV", "SA+MV"))
    if versus_ma:
        beats = versus_ma["ci_low"] > 0
        lines.append(f"MALT+MV vs MA+MV: {points(versus_ma['difference'])} "
                     f"[{points(versus_ma['ci_low'])}, {points(versus_ma['ci_high'])}]: "
                     + ("better, the interval is above 0." if beats else
                        f"{versus_ma['verdict']}; the goal (interval above 0) is not met."))
    if versus_sa:
        below = versus_sa["ci_high"] < 0
        lines.append(f"MALT+MV vs SA+MV: {points(versus_sa['difference'])} "
                     f"[{points(versus_sa['ci_low'])}, {points(versus_sa['ci_high'])}]: "
                     + ("below SA+MV (the interval is under 0)." if below else
                        f"not below SA+MV ({versus_sa['verdict']})."))
    return lines


def write_study_report(lake: Lake, plan: StudyPlan, result: StudyResult) -> Path:
    """``reports/study-<dataset>.md``: the question answered, the table with intervals, the
    diagnostics (positives per role, role data, training, flips, truncation) and the phases'
    wall times. The evaluation's own report (and its chart) sits beside it."""
    dataset = plan.dataset
    eval_report = lake.root / "reports" / f"eval-{dataset}.md"
    sections = [f"# MALT study: {dataset}", "", *goal_lines(result.comparisons), "",
                "## Paired differences", "", comparisons_markdown(result.comparisons), "",
                f"Accuracy per system with intervals, the flip matrix and the chart: "
                f"[{eval_report.name}]({eval_report.name}).", ""]
    for title, query in [
        ("Positive nodes per role at theta (training trees)", "select * from positive_rate"),
        ("Role datasets", "select * from pairs_per_role"),
        ("How the refiner changed the generator's answers (training trees)",
         "select * from flips"),
        ("Truncation", "select * from truncation"),
    ]:
        sections += [f"## {title}", "", to_markdown(run_read_only(lake, query)), ""]
    sections += ["## Training", "", training_markdown(lake, dataset), ""]
    sections += ["## Wall time per phase", "", "| phase | seconds |", "|---|---|"]
    sections += [f"| {name} | {seconds:.0f} |" for name, seconds in result.phases.items()]
    sections += [f"| total | {sum(result.phases.values()):.0f} |", "",
                 "## Plan", "", "```json", json.dumps(asdict(plan), indent=1), "```", ""]
    result.report.parent.mkdir(parents=True, exist_ok=True)
    temp = result.report.with_suffix(".md.partial")
    temp.write_text("\n".join(sections), encoding="utf-8")
    temp.replace(result.report)
    lake.share(result.report)
    return result.report


def training_markdown(lake: Lake, dataset: str) -> str:
    """Per role and stage: rows, steps, first and final loss, dropped rows, loss plot."""
    store = AdapterStore(lake, dataset)
    lines = ["| role | stage | rows | dropped (too long) | steps | first loss | final loss | "
             "plot |", "|---|---|---|---|---|---|---|---|"]
    for role in ROLES:
        directory = store.current(role)
        if directory is None:
            lines.append(f"| {role} | none | | | | | | |")
            continue
        for name, stage in store.manifest(directory)["stages"].items():
            if isinstance(stage, str):
                lines.append(f"| {role} | {name} | {stage} | | | | | |")
                continue
            history = stage["loss_history"]
            first = f"{history[0][1]:.3f}" if history else ""
            lines.append(f"| {role} | {name} | {stage['rows']} | "
                         f"{stage.get('dropped_too_long', 0)} | {stage['steps']} | {first} | "
                         f"{stage['final_loss']:.3f} | {directory / 'loss.png'} |")
    return "\n".join(lines)
