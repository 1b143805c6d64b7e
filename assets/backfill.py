"""Many shards at once as a Dagster backfill: one run per shard, queued and launched by
Dagster's daemon under the instance's limits (one run per partition, the accelerator pool), so
independent shards run side by side and the UI shows the backfill like one launched there.

The CLI (``materialize --all-train``) submits the backfill and waits for it. A daemon already
serving the instance (``malt-lake ui``, or ``dagster-daemon`` of a deployment) runs it; if none
is, the CLI starts one for as long as the backfill lasts, its log in the instance's directory.
The backfill is tagged with the CLI's warehouse: a run whose code location would write
another one refuses to start (``assets.resources.LakeResource``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from assets.concurrency import WAREHOUSE_TAG
from assets.rounds import asset_key
from assets.runner import job_for
from malt_lake.errors import MaltLakeError
from malt_lake.settings import warehouse_root

DAEMON_FRESH_S = 60.0   # a heartbeat this recent means a daemon serves the instance
POLL_S = 1.0
DONE = {BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS,
        BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED, BulkActionStatus.CANCELED}
Say = Callable[[str], None]


def submit(instance: dg.DagsterInstance, selection: Sequence[str], partition_keys: Sequence[str],
           run_config: dict[str, Any], round_index: int = 1) -> str:
    """Add a backfill of ``selection`` (asset names as round 1 names them) over
    ``partition_keys``; its runs carry ``run_config``. Returns the backfill's id."""
    from assets.definitions import defs

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=defs.resolve_asset_graph(),
        partition_names=list(partition_keys),
        asset_selection=[asset_key(name, round_index) for name in selection],
        backfill_timestamp=time.time(),
        tags={"malt/launched_by": "cli", WAREHOUSE_TAG: str(warehouse_root())},
        dynamic_partitions_store=instance, all_partitions=False,
        title=f"{job_for(selection) or f'{len(selection)} assets'} over "
              f"{len(partition_keys)} shards",
        description="malt-lake materialize --all-train", run_config=run_config or None)
    instance.add_backfill(backfill)
    return backfill.backfill_id


def daemon_serves(instance: dg.DagsterInstance) -> bool:
    """Whether a daemon's backfill loop has beaten in the last ``DAEMON_FRESH_S``."""
    beat = instance.get_daemon_heartbeats().get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


class DaemonGone(MaltLakeError):
    """The daemon running a backfill stopped before the backfill ended."""


@contextlib.contextmanager
def daemon_running(instance: dg.DagsterInstance, say: Say, *, reuse: bool = True
                   ) -> Iterator[Callable[[], str | None]]:
    """A daemon for the instance while the block runs: the one already serving it (if
    ``reuse``), or one started here (``dagster-daemon run -m assets.definitions``, in a
    session of its own so a Ctrl-C reaches only the CLI) and stopped after, its heartbeats
    wiped so the next CLI does not take the stopped daemon for a live one. Yields a probe
    that says why the daemon is gone, or None while it serves."""
    if reuse and daemon_serves(instance):
        say("the instance's daemon runs the backfill")
        yield lambda: None if daemon_serves(instance) else (
            f"the instance's daemon stopped beating for {DAEMON_FRESH_S:.0f}s")
        return
    logs = Path(instance.root_directory) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"daemon-{os.getpid()}.log"
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(daemon), "run", "-m", "assets.definitions"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    say(f"started a Dagster daemon for the backfill (pid {proc.pid}, log {log})")
    try:
        yield lambda: None if proc.poll() is None else (
            f"the daemon exited with status {proc.returncode}; its log: {log}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        instance.wipe_daemon_heartbeats()


def wait(instance: dg.DagsterInstance, backfill_id: str, say: Say,
         daemon_gone: Callable[[], str | None] = lambda: None,
         timeout_s: float | None = None, expected: int = 1) -> list[dg.DagsterRun]:
    """Follow the backfill until it ends, saying each run's status changes; the newest run
    of each shard (a retried run's last attempt). A backfill that did not succeed, or whose
    daemon is gone, is an error naming its shards. Ctrl-C asks Dagster to cancel it and
    waits for that."""
    seen: dict[str, str] = {}
    started = time.time()
    cancelled = told = False
    while True:
        try:
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            for run in sorted(runs, key=lambda r: r.tags.get("dagster/partition", "")):
                status = run.status.value
                if seen.get(run.run_id) != status:
                    seen[run.run_id] = status
                    say(f"  {run.tags.get('dagster/partition', '?')}: {status.lower()} "
                        f"(run {run.run_id[:8]}, {time.time() - started:.0f}s)")
            if backfill.status in DONE:
                break
            shards = {r.tags.get("dagster/partition") for r in runs}
            if not told and len(shards) >= expected and all(
                    r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
                told = True  # the daemon closes a backfill at its next look, every 30 s
                say("  every run succeeded; waiting for Dagster's backfill daemon to close "
                    "the backfill")
            if (gone := daemon_gone()) is not None:
                raise DaemonGone(f"backfill {backfill_id} is {backfill.status.value} but "
                                    f"{gone}; run `malt-lake ui` to let its daemon finish it")
            if timeout_s is not None and time.time() - started > timeout_s:
                raise MaltLakeError(f"backfill {backfill_id} still {backfill.status.value} "
                                    f"after {timeout_s:.0f}s")
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            say(f"cancelling backfill {backfill_id} (Ctrl-C again to leave it running)")
            backfill = instance.get_backfill(backfill_id)
            if backfill is not None and backfill.status not in DONE:
                instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))
    newest: dict[str, dg.DagsterRun] = {}
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        newest[run.tags.get("dagster/partition", run.run_id)] = run
    runs = list(newest.values())
    failed = sorted(key for key, run in newest.items()
                    if run.status != dg.DagsterRunStatus.SUCCESS)
    if backfill.status != BulkActionStatus.COMPLETED_SUCCESS or failed:
        raise MaltLakeError(f"backfill {backfill_id} ended {backfill.status.value}; runs that "
                            f"did not succeed: {', '.join(failed) or 'none'} (`malt-lake ui`, "
                            "Runs, shows their logs)")
    return runs


def run_backfill(instance: dg.DagsterInstance, selection: Sequence[str],
                 partition_keys: Sequence[str], run_config: dict[str, Any], say: Say,
                 round_index: int = 1) -> list[dg.DagsterRun]:
    """Submit a backfill and wait for it, with a daemon running it (one started here if the
    daemon that seemed to serve the instance stops beating)."""
    backfill_id = submit(instance, selection, partition_keys, run_config, round_index)
    say(f"backfill {backfill_id}: {', '.join(selection)} over {len(partition_keys)} shard(s)")
    expected = len(set(partition_keys))
    reused = daemon_serves(instance)
    try:
        with daemon_running(instance, say) as daemon_gone:
            return wait(instance, backfill_id, say, daemon_gone, expected=expected)
    except DaemonGone as gone:
        if not reused:
            raise
        say(f"{gone}; starting a daemon here")
    with daemon_running(instance, say, reuse=False) as daemon_gone:
        return wait(instance, backfill_id, say, daemon_gone, expected=expected)
