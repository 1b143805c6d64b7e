"""Dagster, not our own locks, decides what runs at once: the accelerator pool and the
per-partition run limit of a new instance (``assets.concurrency``)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import dagster as dg

from assets.concurrency import ACCELERATOR_POOL
from assets.definitions import ALL_ASSETS, DEFINED_ROUNDS
from assets.rounds import asset_key
from malt_lake.names import ROLES, PartitionKey
from tests.resources import asset_resources

KEY = "arith.train.0000"
HOLDS_THE_MODEL = ("generations", "critiques", "refinements", "evaluation",
                   *(f"{role}_adapter" for role in ROLES))


def test_every_asset_that_holds_the_model_and_only_those_is_in_the_accelerator_pool():
    pools = {key: asset.node_def.pool for asset in ALL_ASSETS for key in asset.keys}
    in_pool = {key for key, pool in pools.items() if pool == ACCELERATOR_POOL}
    expected = {asset_key(name, index) for name in HOLDS_THE_MODEL
                for index in range(1, DEFINED_ROUNDS + 1)}
    assert in_pool == expected
    assert {pool for key, pool in pools.items() if key not in expected} == {None}


def test_a_new_instance_limits_the_pool_and_each_partition_and_retries_lost_runs(warehouse):
    from assets import runner

    instance = runner.instance()
    config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    [limit] = config.run_queue_config.tag_concurrency_limits
    assert limit == {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True},
                     "limit": 1}
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    # a user's own dagster.yaml is theirs: it is not rewritten
    config_file = runner.dagster_home() / "dagster.yaml"
    config_file.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    runner.dagster_home()
    assert config_file.read_text(encoding="utf-8") == "telemetry:\n  enabled: false\n"


def test_an_expansion_waits_for_the_accelerator_another_run_holds(warehouse, lake):
    """Another run holds the pool's one slot: the expansion step queues (nothing written)
    until that slot is freed, then runs."""
    from assets import runner

    instance = runner.instance()
    resources = asset_resources(lake)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert dg.materialize(ALL_ASSETS, selection=["questions"], partition_key=KEY,
                          instance=instance, resources=resources).success
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)
    assert storage.claim_concurrency_slot(ACCELERATOR_POOL, "another-run", "train").is_claimed

    outcome: dict[str, bool] = {}

    def expand() -> None:
        outcome["success"] = dg.materialize(ALL_ASSETS, selection=["generations"],
                                            partition_key=KEY, instance=instance,
                                            resources=resources).success

    worker = threading.Thread(target=expand)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the step has asked for a slot and is waiting
        info = storage.get_concurrency_info(ACCELERATOR_POOL)
        if info.pending_step_count:
            break
        time.sleep(0.2)
    assert storage.get_concurrency_info(ACCELERATOR_POOL).pending_step_count == 1
    time.sleep(2)
    assert worker.is_alive() and not lake.has_partition("generations", PartitionKey.parse(KEY))

    storage.free_concurrency_slots_for_run("another-run")
    worker.join(timeout=120)
    assert not worker.is_alive() and outcome == {"success": True}
    assert lake.has_partition("generations", PartitionKey.parse(KEY))
    info = storage.get_concurrency_info(ACCELERATOR_POOL)
    assert info.active_slot_count == 0 and info.pending_step_count == 0


def _run_holding_the_pool(instance: dg.DagsterInstance, pid: int) -> str:
    """A started run of this machine, in process ``pid``, holding the accelerator slot."""
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from assets.concurrency import RUN_HOST, RUN_PID

    run = instance.add_run(DagsterRun(job_name="tree", status=DagsterRunStatus.STARTED,
                                      tags={RUN_HOST: socket.gethostname(), RUN_PID: str(pid)}))
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)
    assert storage.claim_concurrency_slot(ACCELERATOR_POOL, run.run_id, "generations").is_claimed
    return run.run_id


def test_a_killed_cli_run_is_failed_and_its_slot_freed_while_a_live_one_keeps_it(warehouse):
    from assets import runner
    from assets.concurrency import release_dead_runs

    instance = runner.instance()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists: the run's process was killed
    dead = _run_holding_the_pool(instance, gone.pid)
    assert release_dead_runs(instance) == [dead]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).active_slot_count == 0

    live = _run_holding_the_pool(instance, os.getpid())
    assert release_dead_runs(instance) == []
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).active_slot_count == 1
