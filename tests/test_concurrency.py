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

    worker = threading.Thread(target=expand, daemon=True)
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


def _run_holding_the_pool(instance: dg.DagsterInstance, pid: int, *,
                          started: str | None = None, machine: str | None = None) -> str:
    """A started CLI run in process ``pid`` (of this machine unless ``machine``), holding the
    accelerator slot."""
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from assets.concurrency import (
        RUN_HOST,
        RUN_MACHINE,
        RUN_PID,
        RUN_STARTED,
        machine_id,
        process_start,
    )

    tags = {RUN_HOST: socket.gethostname(), RUN_MACHINE: machine or machine_id(),
            RUN_PID: str(pid), RUN_STARTED: started or process_start(pid) or ""}
    run = instance.add_run(DagsterRun(job_name="tree", status=DagsterRunStatus.STARTED,
                                      tags=tags))
    claim = instance.event_log_storage.claim_concurrency_slot(ACCELERATOR_POOL, run.run_id,
                                                              "generations")
    assert claim.is_claimed
    return run.run_id


def _active_slots(instance: dg.DagsterInstance) -> int:
    return instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).active_slot_count


def test_a_killed_cli_run_is_failed_and_its_slot_freed_while_a_live_one_keeps_it(warehouse):
    from assets import runner
    from assets.concurrency import release_dead_runs

    instance = runner.instance()
    instance.event_log_storage.set_concurrency_slots(ACCELERATOR_POOL, 3)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists: the run's process was killed
    dead = _run_holding_the_pool(instance, gone.pid, started="1")
    assert release_dead_runs(instance) == [dead]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert _active_slots(instance) == 0

    live = _run_holding_the_pool(instance, os.getpid())
    assert release_dead_runs(instance) == []
    assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.STARTED
    assert _active_slots(instance) == 1
    instance.event_log_storage.free_concurrency_slots_for_run(live)

    # this pid, but another process's start time: the pid was reused, the run's process is gone
    reused = _run_holding_the_pool(instance, os.getpid(), started="1")
    # a dead pid of another container with the same host name: not ours to judge
    elsewhere = _run_holding_the_pool(instance, gone.pid, machine=f"{socket.gethostname()}/x/y")
    assert release_dead_runs(instance) == [reused]
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED


def test_a_step_waiting_for_a_slot_gets_it_when_its_holder_dies(warehouse, lake, monkeypatch):
    """The holder dies after the expansion queued behind it: the run's watcher releases it."""
    from assets import concurrency, runner

    monkeypatch.setenv("MALT_ENV", "test")
    monkeypatch.setattr(concurrency, "RELEASE_EVERY_S", 0.5)
    runner.materialize(["dataset_catalog"])
    runner.materialize(["questions"], partition_key=KEY)
    instance = runner.instance()
    instance.event_log_storage.set_concurrency_slots(ACCELERATOR_POOL, 1)
    holder = subprocess.Popen(["sleep", "120"])
    _run_holding_the_pool(instance, holder.pid)
    worker = threading.Thread(target=runner.materialize, args=(["generations"], KEY), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while (time.monotonic() < deadline and not
           instance.event_log_storage.get_concurrency_info(ACCELERATOR_POOL).pending_step_count):
        time.sleep(0.2)
    time.sleep(1.5)  # three watcher rounds: the holder lives, so the step keeps waiting
    assert worker.is_alive() and not lake.has_partition("generations", PartitionKey.parse(KEY))
    holder.kill()
    holder.wait()
    worker.join(timeout=120)
    assert not worker.is_alive() and lake.has_partition("generations", PartitionKey.parse(KEY))
    assert _active_slots(instance) == 0


def test_an_instance_an_earlier_version_wrote_gets_the_limits(warehouse):
    from assets import runner
    from assets.concurrency import EARLIER_WRITTEN

    home = runner.dagster_home()
    (home / "dagster.yaml").write_text(EARLIER_WRITTEN, encoding="utf-8")
    assert runner.instance().get_concurrency_config().pool_config.default_pool_limit == 1
