"""The whole graph in order, as the demo and ``malt-lake rounds`` run it.

One round: questions → G/V/R trees of the training shards → rewards, credit, role datasets →
three adapters per dataset → evaluation on each dataset's held-out split with its own
adapters. Round i+1 (the paper's future work) is the same graph under the asset key prefix
``round_<i+1>`` (``assets.rounds``), in its own lake ``<warehouse>/rounds/round-<i+1>/``; its
expansion assets expand each dataset's trees with round i's adapters of that dataset (G with
G's, V with V's, R with R's); its adapters are fresh LoRAs on the base model trained on the
new trees, and it has its own evaluation table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from assets import rounds, runner
from assets.concurrency import create_pool_limit
from malt_lake.errors import MaltLakeError
from malt_lake.evaluate import stored_comparisons, summary
from malt_lake.lake import Lake
from malt_lake.settings import round_warehouse, warehouse_root

Say = Callable[[str], None]


@dataclass(frozen=True)
class RoundPlan:
    """Sizes of one pass over the graph."""

    train_partitions: list[str]
    datasets: list[str]
    n: int = 3
    max_tokens: int | None = 128  # None: each dataset's token budgets
    theta: float = 0.5
    seeds: int = 2
    eval_limit: int | None = None
    train_steps: int | None = None
    recipe: str | None = None
    ablations: bool = False  # also evaluate the paper's ablations


@dataclass
class RoundResult:
    index: int
    warehouse: Path | str
    summaries: dict[str, pa.Table] = field(default_factory=dict)
    comparisons: dict[str, pa.Table] = field(default_factory=dict)


def ingest(datasets: list[str] | None, say: Say, round_index: int = 1) -> list[str]:
    """A round's shard catalog (registers partitions), the accelerator pool's limit and
    every shard's questions: what workers need before they fan out."""
    runner.materialize(["dataset_catalog"], round_index=round_index)
    create_pool_limit(runner.instance())
    configured = runner.registered_partitions(kind="datasets")
    unknown = sorted(set(datasets or []) - set(configured))
    if unknown:
        raise MaltLakeError(f"unknown dataset(s) {', '.join(unknown)}; configured: "
                            f"{', '.join(configured)} (MALT_CONFIG adds more)")
    keys = [k for k in runner.registered_partitions()
            if not datasets or k.split(".", 1)[0] in datasets]
    for key in keys:
        runner.materialize(["questions"], partition_key=key, round_index=round_index)
    say(f"ingested {len(keys)} partition(s)")
    return keys


def run_round(index: int, plan: RoundPlan, say: Say) -> RoundResult:
    """Round ``index`` of the environment's warehouse, from its trees to its evaluation."""
    warehouse = round_warehouse(warehouse_root(), index)
    if index > 1:
        say(f"[bold]round {index}[/bold]: assets {rounds.prefix(index)}/..., lake {warehouse}, "
            f"trees expanded with round {index - 1}'s adapters")
        ingest(plan.datasets, say, index)
    tree = runner.expand_selection(["tree"])
    sampling = {k: v for k, v in {"n": plan.n, "max_tokens": plan.max_tokens}.items()
                if v is not None}
    for key in plan.train_partitions:
        say(f"[bold]expanding {key}[/bold] (n={plan.n}, max_tokens="
            f"{plan.max_tokens or 'the dataset budgets'})")
        runner.materialize(tree, key, runner.run_config_for(plan.theta, sampling, tree),
                           round_index=index)
    train = {k: v for k, v in {"max_steps": plan.train_steps, "recipe": plan.recipe}.items()
             if v is not None}
    adapters = runner.expand_selection(["adapters"])
    for dataset in plan.datasets:
        say(f"[bold]training {dataset} adapters[/bold] (G: SFT; V, R: SFT then DPO)")
        runner.materialize(adapters, dataset,
                           runner.run_config_for(selection=adapters, train=train),
                           round_index=index)
    result = RoundResult(index, warehouse)
    evaluation = {k: v for k, v in {"seeds": plan.seeds, "max_tokens": plan.max_tokens,
                                    "limit": plan.eval_limit,
                                    "ablations": plan.ablations or None}.items()
                  if v is not None}
    for dataset in plan.datasets:
        say(f"[bold]evaluating {dataset}[/bold] on held-out questions ({plan.seeds} seed(s))")
        runner.materialize(["evaluation"], dataset, runner.run_config_for(
            selection=["evaluation"], evaluation=evaluation), round_index=index)
        result.summaries[dataset] = summary(Lake(warehouse), dataset)
        result.comparisons[dataset] = stored_comparisons(Lake(warehouse), dataset)
    return result
