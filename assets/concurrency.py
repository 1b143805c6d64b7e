"""How many of what run at once, said to Dagster rather than enforced by our own locks.

- ``ACCELERATOR_POOL``: the concurrency pool of every asset that holds the model (expansion,
  training, evaluation). Dagster gives each running step of these a slot of the pool; the
  instance's limit says how many run at once across all runs (one per accelerator; the
  laptop instance's default is 1: one model in memory at a time).
- Per-partition run limits: a partition's runs (``dagster/partition`` tag) queue behind each
  other, so a backfill or two UI launches never write one shard twice at once, while
  different shards run side by side.
- Run retries: a run whose worker crashed or was lost is started again (twice at most) by the
  daemon (``dagster dev`` runs one); an asset's own error is not retried, it would fail the
  same way. A retried run rewrites whole partitions (Delta overwrites), so a crash halfway
  leaves nothing to clean up.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from malt_lake.errors import MaltLakeError
from malt_lake.lake import process_alive

ACCELERATOR_POOL = "malt_accelerator"
RUN_HOST, RUN_PID = "malt/host", "malt/pid"  # tags of a run the CLI executes in its process
PARTITION_TAG = "dagster/partition"
ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
          dg.DagsterRunStatus.CANCELING]

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
  retry_on_asset_or_op_failure: false    # lost workers and crashes only
"""


def worker_tags() -> dict[str, str]:
    """Tags that name the process an in-process (CLI) run executes in."""
    return {RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())}


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the in-progress runs of this machine whose process is gone and free their slots.

    A CLI run killed mid-step (kill -9, a lost terminal) never reports its end: it would show
    as started forever, hold its accelerator slot (every later step of the pool would wait
    for it) and keep its partition busy. Runs of other machines and runs whose process still
    lives are left alone (Dagster's run monitoring watches launched runs). Returns the run
    ids released."""
    released = []
    for run in instance.get_runs(dg.RunsFilter(statuses=ACTIVE,
                                               tags={RUN_HOST: socket.gethostname()})):
        pid = run.tags.get(RUN_PID, "")
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        instance.report_run_failed(run, f"its process (pid {pid}) is gone; its "
                                   f"{ACCELERATOR_POOL} slots are freed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return sorted(released)


def refuse_if_partition_busy(instance: dg.DagsterInstance, partition_key: str) -> None:
    """The per-partition run limit, for a run the CLI executes in its own process (the
    queue holds back only the runs it launches): refuse at once, naming the other run."""
    busy = instance.get_runs(dg.RunsFilter(statuses=[*ACTIVE, dg.DagsterRunStatus.QUEUED],
                                           tags={PARTITION_TAG: partition_key}), limit=1)
    if busy:
        run = busy[0]
        where = (f"pid {run.tags[RUN_PID]} on {run.tags.get(RUN_HOST)}" if RUN_PID in run.tags
                 else "launched from the UI or a backfill")
        raise MaltLakeError(f"{partition_key} is being materialized by another run "
                            f"({run.run_id[:8]}, {where}); wait for it to finish or stop "
                            "it, then retry")
