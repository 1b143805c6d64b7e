"""How many of what run at once, said to Dagster rather than enforced by our own locks.

- ``ACCELERATOR_POOL``: the concurrency pool of every asset that holds the model (expansion,
  training, evaluation). Dagster gives each running step of these a slot of the pool; the
  instance's limit says how many run at once across all runs (one per accelerator; the
  laptop instance's default is 1: one model in memory at a time).
- Per-partition run limits: a partition's runs (``dagster/partition`` tag) queue behind each
  other, so a backfill or two UI launches never write one shard twice at once, while
  different shards run side by side.
- Run retries: a run the daemon launched (the UI's launches, backfills) whose worker crashed
  is started again, twice at most (``dagster dev``, which ``malt-lake ui`` runs, has a
  daemon); an asset's own error is not retried, it would fail the same way. CLI runs are not
  retried: the CLI reports them. A retried run rewrites whole partitions (Delta overwrites),
  so a crash halfway leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from malt_lake.errors import MaltLakeError
from malt_lake.storage import process_alive

ACCELERATOR_POOL = "malt_accelerator"
# tags of a run the CLI executes in its own process (``worker_tags``)
RUN_HOST, RUN_MACHINE, RUN_PID, RUN_STARTED = ("malt/host", "malt/machine", "malt/pid",
                                               "malt/pid_started")
# the warehouse a backfill was submitted for (``assets.backfill``): its runs write only there
WAREHOUSE_TAG = "malt/warehouse"
RELEASE_EVERY_S = 10.0
PARTITION_TAG = "dagster/partition"
ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
          dg.DagsterRunStatus.CANCELING]

#: what ``assets.runner`` wrote into a new ``dagster.yaml`` before these settings existed
EARLIER_WRITTEN = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"

#: the ``concurrency`` and ``run_retries`` sections of a new instance's ``dagster.yaml``
#: (``assets.runner``)
INSTANCE_SETTINGS = """\
concurrency:
  pools:
    default_limit: 1      # malt_accelerator: one model in memory at a time; raise it with
                          # `dagster instance concurrency set malt_accelerator <accelerators>`
  runs:
    tag_concurrency_limits:
      - key: dagster/partition   # one run per partition at a time; shards run in parallel
        value:
          applyLimitPerUniqueValue: true
        limit: 1
run_retries:
  enabled: true
  max_retries: 2
  retry_on_asset_or_op_failure: false    # runs the daemon launched whose worker was lost
"""


def worker_tags() -> dict[str, str]:
    """Tags that name the process an in-process (CLI) run executes in: its machine (host,
    boot and pid namespace, so containers sharing a hostname are told apart) and its pid
    with the process's start time (so a reused pid is not taken for it)."""
    pid = os.getpid()
    return {RUN_HOST: socket.gethostname(), RUN_MACHINE: machine_id(),
            RUN_PID: str(pid), RUN_STARTED: process_start(pid) or ""}


def machine_id() -> str:
    """Host name, boot id and pid-namespace inode: equal only for processes that can see
    each other's pids."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _process_gone(run: dg.DagsterRun) -> bool:
    pid, started = run.tags.get(RUN_PID, ""), run.tags.get(RUN_STARTED, "")
    if not pid.isdigit():
        return False
    if not process_alive(int(pid)):
        return True
    return bool(started) and process_start(int(pid)) not in (None, started)  # pid reused


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the in-progress runs of this machine whose process is gone and free their slots.

    A CLI run killed mid-step (kill -9, a lost terminal) never reports its end: it would show
    as started forever, hold its accelerator slot (every later step of the pool would wait
    for it) and keep its partition busy. Runs of other machines (or other containers) and
    runs whose process still lives are left alone. Returns the run ids released."""
    released = []
    for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE,
                                               tags={RUN_MACHINE: machine_id()})):
        if not _process_gone(run):
            continue
        instance.report_run_failed(run, f"its process (pid {run.tags[RUN_PID]}) is gone; its "
                                   f"{ACCELERATOR_POOL} slots are freed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return sorted(released)


@contextlib.contextmanager
def releasing_dead_runs(instance: dg.DagsterInstance,
                        every_s: float | None = None) -> Iterator[None]:
    """Release dead runs now and every ``every_s`` seconds (``RELEASE_EVERY_S``) until the
    block ends: a step queued for a slot whose holder dies after the queueing started gets
    it."""
    every_s = every_s or RELEASE_EVERY_S
    release_dead_runs(instance)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # a watcher must not fail the run
                release_dead_runs(instance)

    watcher = threading.Thread(target=watch, name="malt-release-dead-runs", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def refuse_if_partition_busy(instance: dg.DagsterInstance, partition_key: str) -> None:
    """The per-partition run limit, for a run the CLI executes in its own process (the
    queue holds back only the runs it launches): refuse at once, naming the run in progress.
    A check, not a claim: two CLI runs started in the same instant can both pass it, and the
    asset's partition lock is then what stops the second (on one machine)."""
    busy = instance.get_runs(dg.RunsFilter(statuses=ACTIVE, tags={PARTITION_TAG: partition_key}),
                             limit=1)
    if busy:
        run = busy[0]
        where = (f"pid {run.tags[RUN_PID]} on {run.tags.get(RUN_HOST)}" if RUN_PID in run.tags
                 else "launched from the UI or a backfill")
        raise MaltLakeError(f"{partition_key} is being materialized by another run "
                            f"({run.run_id[:8]}, {where}); wait for it to finish or stop "
                            "it, then retry")


def create_pool_limit(instance: dg.DagsterInstance) -> None:
    """Give the accelerator pool its row (the instance's default limit) before workers fan
    out: two runs that both create it at their first step collide in Postgres (a unique key
    violation that fails one of them), as two writers creating one table would."""
    storage = instance.event_log_storage
    if ACCELERATOR_POOL not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(ACCELERATOR_POOL)


def upgrade_written_config(config: Path) -> None:
    """Add the settings to a ``dagster.yaml`` an earlier malt-lake wrote (nothing but its
    telemetry lines); a file with anything else is the user's and stays as it is."""
    if config.read_text(encoding="utf-8") == EARLIER_WRITTEN:
        config.write_text(EARLIER_WRITTEN + INSTANCE_SETTINGS, encoding="utf-8")
