"""Materialize assets in-process against the persistent Dagster instance, so runs started
from the CLI show up in the UI's run history beside runs launched there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg

from assets.concurrency import (
    EARLIER_WRITTEN,
    INSTANCE_SETTINGS,
    refuse_if_partition_busy,
    releasing_dead_runs,
    upgrade_written_config,
    worker_tags,
)
from assets.rounds import asset_key, check_round, in_round, op_name, round_of_key
from malt_lake.environment import environment
from malt_lake.errors import MaltLakeError
from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from malt_lake.settings import warehouse_root


def quiet_logging() -> dict[str, Any]:
    """Run config for CLI runs: the CLI draws its own progress, so Dagster's console logger
    shows only ``MALT_LOG_LEVEL`` and up; every event stays in the UI's run logs."""
    return {"loggers": {"console": {"config": {"log_level": environment().log_level}}}}


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``<warehouse>/dagster`` (this machine's directory of
    an s3:// warehouse: ``Lake.root``) (created if missing, with the
    concurrency limits of ``assets.concurrency``; a ``dagster.yaml`` an earlier version wrote
    gets them too, any other is the user's and is left as it is)."""
    lake = Lake(warehouse_root())
    lake.storage.check()  # a warehouse that cannot be reached is named before anything runs
    home = Path(environment().dagster_home or lake.root / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"  # sqlite storage here; no telemetry, no newsletter modal
    if not config.exists():
        config.write_text(EARLIER_WRITTEN + INSTANCE_SETTINGS, encoding="utf-8")
    upgrade_written_config(config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()


EXPANSION = ("generations", "critiques", "refinements")
ADAPTERS = ("generator_adapter", "verifier_adapter", "refiner_adapter")


def partitioning(asset: str) -> str | None:
    """'shards', 'datasets' or None (unpartitioned) for an asset name."""
    from assets.definitions import BASE_ASSETS, defs

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(asset)
    if not graph.has(key) or round_of_key(key) > 1:
        known = sorted(key.to_user_string() for asset in BASE_ASSETS for key in asset.keys)
        raise MaltLakeError(f"unknown asset {asset!r}; assets: {', '.join(known)}; jobs: "
                            f"{', '.join(job_assets())} (a later round's: the same names "
                            "with --round)")
    partitions_def = graph.get(key).partitions_def
    return partitions_def.name if partitions_def is not None else None


@cache
def job_assets() -> dict[str, tuple[str, ...]]:
    """Each job's asset names (``assets.jobs``, as round 1 names them), in the graph's order
    (parents first); a later round's job holds the same names under its prefix."""
    from assets.definitions import BASE_ASSETS, defs
    from assets.jobs import jobs_of_round

    graph = defs.resolve_asset_graph()
    ordered = [spec.key for asset in BASE_ASSETS for spec in asset.specs]
    out = {}
    for job in jobs_of_round(1):
        chosen = job.selection.resolve(graph)
        out[job.name] = tuple(key.to_user_string() for key in ordered if key in chosen)
    return out


def expand_selection(selection: Sequence[str]) -> list[str]:
    """Asset names, with job names (expansion, tree, relabel or cheap, role_datasets,
    adapters, evaluate) expanded to their assets."""
    from assets.jobs import SPELLINGS

    jobs = job_assets()
    out: list[str] = []
    for name in selection:
        for item in jobs.get(SPELLINGS.get(name, name), (name,)):
            if item not in out:
                out.append(item)
    return out


def job_for(selection: Sequence[str]) -> str | None:
    """The job whose assets are exactly ``selection``, if one is: its runs carry its name."""
    wanted = set(selection)
    return next((name for name, assets in job_assets().items() if set(assets) == wanted), None)


def run_config_for(theta: float | None = None, role_overrides: dict[str, Any] | None = None,
                   selection: Sequence[str] = (), *,
                   train: dict[str, Any] | None = None,
                   evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run config for the selected assets: theta for credit, sampling overrides for
    expansion, training and evaluation settings (the same in every round: a later round's
    expansion finds the previous round's adapters itself)."""
    ops: dict[str, Any] = {}
    if theta is not None and "credit" in selection:
        ops["credit"] = {"config": {"theta": theta}}
    for asset in EXPANSION:
        if role_overrides and asset in selection:
            ops[asset] = {"config": dict(role_overrides)}
    for asset in ADAPTERS:
        if train and asset in selection:
            ops[asset] = {"config": dict(train)}
    if evaluation and "evaluation" in selection:
        ops["evaluation"] = {"config": dict(evaluation)}
    return {"ops": ops} if ops else {}


def materialize(
    selection: Sequence[str],
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
    dagster_instance: dg.DagsterInstance | None = None,
    round_index: int = 1,
) -> dg.ExecuteInJobResult:
    """Run one materialization of ``selection`` (asset names, as round 1 names them) for one
    partition, in round ``round_index`` (``assets.rounds``: its keys, jobs and lake)."""
    from assets.definitions import DEFINED_ROUNDS
    from assets.resources import resources_for_env

    check_round(round_index, DEFINED_ROUNDS)
    dagster_instance = dagster_instance or instance()
    selection = expand_selection(selection)
    kinds = {partitioning(asset) for asset in selection}
    if len(kinds) > 1:
        raise MaltLakeError(f"{', '.join(selection)} mix shard-partitioned, per-dataset and "
                            "unpartitioned assets; materialize them in separate runs")
    kind = kinds.pop()
    if partition_key is None and kind is not None:
        raise MaltLakeError(f"{', '.join(selection)} need a partition: a shard such as "
                            "arith.train.0000" if kind == "shards" else "a dataset such as arith")
    if partition_key is not None and kind is None:
        raise MaltLakeError(f"{', '.join(selection)} are not partitioned; drop the partition")
    if kind is not None:
        check_partition(dagster_instance, kind, partition_key)

    resources = resources_for_env()  # the environment now, not at import
    run_config = {**quiet_logging(), **round_config(run_config or {}, round_index)}
    with releasing_dead_runs(dagster_instance):
        if partition_key is not None:
            refuse_if_partition_busy(dagster_instance, partition_key)
        result = _execute(selection, partition_key, run_config, dagster_instance,
                          round_index, resources)
    if not result.success:
        raise MaltLakeError(_failure_message(result, selection, partition_key, round_index))
    return result


def check_partition(dagster_instance: dg.DagsterInstance, kind: str, partition_key: str
                    ) -> None:
    """A well-formed key the instance has registered, or an error saying how to get it."""
    if kind == "shards":
        PartitionKey.parse(partition_key)
    known = sorted(dagster_instance.get_dynamic_partitions(kind))
    if partition_key not in known:
        raise MaltLakeError(
            f"unknown partition {partition_key!r}: run `malt-lake ingest` to register the "
            f"configured datasets and their shards ({len(known)} known: "
            f"{', '.join(known[:5])}{' ...' if len(known) > 5 else ''})"
        )


def _execute(selection: list[str], partition_key: str | None, run_config: dict[str, Any],
             dagster_instance: dg.DagsterInstance, round_index: int,
             resources: dict[str, Any]) -> dg.ExecuteInJobResult:
    from assets.definitions import ALL_ASSETS, definitions_for

    job = job_for(selection)
    if job is not None:  # a named run, as the UI's launchpad starts it
        return definitions_for(resources).resolve_job_def(
            in_round(job, round_index)).execute_in_process(
            run_config=run_config, instance=dagster_instance, partition_key=partition_key,
            tags=worker_tags(), raise_on_error=False)
    return dg.materialize(ALL_ASSETS,
                          selection=[asset_key(name, round_index) for name in selection],
                          partition_key=partition_key, run_config=run_config, resources=resources,
                          instance=dagster_instance, tags=worker_tags(), raise_on_error=False)


def round_config(run_config: dict[str, Any], round_index: int) -> dict[str, Any]:
    """``run_config`` (ops named as in round 1) for round ``round_index``, whose ops carry
    its prefix (``round_2__credit``)."""
    if round_index == 1 or "ops" not in run_config:
        return run_config
    ops = {op_name(name, round_index): value for name, value in run_config["ops"].items()}
    return {**run_config, "ops": ops}


def _failure_message(result: dg.ExecuteInJobResult, selection: Sequence[str],
                     partition_key: str | None, round_index: int) -> str:
    failures = [event for event in result.all_events if event.is_step_failure]
    where = f" for partition {partition_key}" if partition_key else ""
    where += f" in round {round_index}" if round_index > 1 else ""
    details = []
    for event in failures:
        error = event.step_failure_data.error
        cause = error.cause if error and error.cause else error
        details.append(f"{event.step_key}: {cause.message.strip() if cause else 'failed'}")
    return f"materializing {', '.join(selection)}{where} failed:\n  " + "\n  ".join(details)


def registered_partitions(dagster_instance: dg.DagsterInstance | None = None,
                          kind: str = "shards") -> list[str]:
    """Registered partition keys: shards (``arith.train.0000``) or datasets (``arith``)."""
    inst = dagster_instance or instance()
    return sorted(inst.get_dynamic_partitions(kind))
