"""The lake: one Delta table (delta-rs) per lake table, partitioned by dataset and shard.

Layout: ``<warehouse>/lake/<table>/`` holds a Delta table (its ``_delta_log`` and hive-style Parquet
files). A partition is replaced by one commit, an overwrite whose predicate names the
partition, so a reader sees the table version before the write or after it, never a mix, and
a writer killed mid-write leaves the last version readable (its files are in no commit;
``vacuum`` deletes them). Writers of different partitions commit concurrently (delta-rs
retries a commit that lost the race and checks that the partitions do not overlap).

Every commit is a table version, so the labels of an earlier theta stay readable (time
travel) until old versions are vacuumed. Each commit records the partition it replaced as an
application transaction (``partition:<dataset>/<shard>``), so a partition written with zero
rows still counts as written; a write given a ``write_id`` also records ``write:<id>``, and a
retried write with the same id finds it committed and changes nothing.

The warehouse is a local directory or an S3 prefix (``malt_lake.storage``): the same commits
either way, delta-rs reaching the store itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import (
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction

from malt_lake import schemas
from malt_lake.errors import LakeError
from malt_lake.names import PartitionKey, check_name
from malt_lake.storage import TEMP_PREFIX, Storage, atomic_file, remove_stale_temps

LEGACY_FILE = "data.parquet"  # the plain-Parquet layout of malt-lake before Delta
COMMIT_RETRIES = 100          # concurrent writers of other partitions of the same table
# delta-rs deletes log entries older than 30 days at each checkpoint by default, which would
# end time travel behind the user's back: versions go only when the user vacuums
TABLE_CONFIGURATION = {"delta.enableExpiredLogCleanup": "false"}
MIN_VACUUM_HOURS = 1  # a running writer's file is uncommitted for minutes at most
WRITER = WriterProperties(compression="ZSTD")


def partition_columns(table: str) -> list[str]:
    """Delta partition columns: (dataset, shard), (dataset) for evaluation tables, or none."""
    if table in schemas.PARTITIONED:
        return ["dataset", "shard"]
    if table in schemas.BY_DATASET:
        return ["dataset"]
    if table in schemas.UNPARTITIONED:
        return []
    raise LakeError(f"unknown lake table {table!r}")


@dataclass(frozen=True)
class Written:
    """What one write committed: the table's location, its new version, the rows written."""

    table: str
    uri: str
    version: int
    rows: int
    skipped: bool = False  # a retried write whose write_id was committed already


class Lake:
    """The warehouse's Delta tables: atomic partition writes, reads at any version.

    ``location`` is where the warehouse lives (a directory or ``s3://bucket/prefix``);
    ``root`` is this machine's directory for it (the warehouse itself when local)."""

    def __init__(self, location: str | Path) -> None:
        self.storage = Storage(location)
        self.location = self.storage.location
        self.root = self.storage.local_dir
        if any(c in str(self.location) for c in "*?[]{}"):
            raise LakeError(f"the warehouse path {self.location} holds a glob character (* ? "
                            "[ ] { }); DuckDB would read its file lists as patterns. Use "
                            "another path")

    @property
    def remote(self) -> bool:
        return self.storage.remote

    @property
    def tables_dir(self) -> Path:
        return self.root / "lake"

    def table_dir(self, table: str) -> Path:
        """A local warehouse's table directory (a remote one has none)."""
        if self.remote:
            raise LakeError(f"{table} lives in {self.location}, not in a local directory")
        return self._inside(self.tables_dir / check_name(table, "table"))

    def table_uri(self, table: str) -> str:
        if self.remote:
            return self.storage.uri("lake", check_name(table, "table"))
        return str(self.table_dir(table))

    def share(self, *files: Path) -> str:
        """Copy files this machine wrote under ``root`` (reports) to the same place in a
        remote warehouse; a local warehouse holds them already. Returns where the first one
        is for readers (a path or a URI)."""
        places = [file.resolve().relative_to(self.root).parts for file in files]
        if self.remote:
            for file, place in zip(files, places, strict=True):
                self.storage.upload_file(file, *place)
        return self.storage.uri(*places[0])

    @property
    def tables_uri(self) -> str:
        """Where the tables are, for messages and users' own readers."""
        return self.storage.uri("lake")

    def _open(self, uri: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(uri, version=version, storage_options=self.storage.delta_options)

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise LakeError(f"path {path} escapes the warehouse {self.root}")
        return resolved

    # -- tables ---------------------------------------------------------------------------
    def create_tables(self) -> None:
        """Create every lake table that does not exist yet (empty, typed, partitioned), so
        writers that fan out over partitions only ever append commits to existing tables."""
        for table in schemas.ALL_TABLES:
            self._table_for_write(table)

    def delta_table(self, table: str, version: int | None = None) -> DeltaTable | None:
        """The table at its latest version (or ``version``); None before its first write."""
        uri = self.table_uri(table)
        self._refuse_legacy(table)
        try:
            return self._open(uri, version)
        except TableNotFoundError:
            return None
        except Exception as exc:  # delta-rs raises DeltaError for a version it lacks
            if version is not None and DeltaTable.is_deltatable(
                    uri, storage_options=self.storage.delta_options):
                latest = self._open(uri).version()
                raise LakeError(f"{table} has no version {version} (versions 0..{latest}, "
                                "minus any vacuumed)") from exc
            raise

    def _table_for_write(self, table: str) -> DeltaTable:
        existing = self.delta_table(table)
        if existing is not None:
            return existing
        if not self.remote:
            self.table_dir(table).mkdir(parents=True, exist_ok=True)
        try:
            return DeltaTable.create(self.table_uri(table), schemas.schema_of(table),
                                     partition_by=partition_columns(table) or None,
                                     mode="ignore", name=table,
                                     configuration=TABLE_CONFIGURATION,
                                     storage_options=self.storage.delta_options)
        except Exception:  # another writer created it in the same instant
            created = self.delta_table(table)
            if created is None:
                raise
            return created

    def _refuse_legacy(self, table: str) -> None:
        if self.remote:  # malt-lake never wrote plain Parquet to an object store
            return
        directory = self.table_dir(table)
        if (directory.is_dir() and not (directory / "_delta_log").exists()
                and next(directory.rglob(LEGACY_FILE), None) is not None):
            raise LakeError(
                f"{directory} holds plain Parquet written by an older malt-lake; this version "
                f"keeps Delta tables. Run `malt-lake migrate` to convert the warehouse "
                f"{self.root} in place (no model call)")

    def version(self, table: str) -> int | None:
        dt = self.delta_table(table)
        return None if dt is None else dt.version()

    # -- writes ---------------------------------------------------------------------------
    def write_partition(self, table: str, key: PartitionKey, data: pa.Table, *,
                        write_id: str | None = None,
                        info: dict[str, str] | None = None) -> Written:
        """Replace one partition of ``table`` with ``data`` (conformed to the table contract)
        in one commit. ``info`` goes into the commit (e.g. theta), shown by ``history``."""
        data = schemas.conform(data, schemas.schema_of(table))
        bad = _rows_outside(data, key)
        if bad:
            raise LakeError(f"{bad} row(s) do not belong to partition {key} of {table}")
        return self._commit(table, data, {"dataset": key.dataset, "shard": key.shard},
                            write_id, info)

    def write_partition_with(self, table: str, key: PartitionKey,
                             write: Callable[[Path], None], *, write_id: str | None = None,
                             info: dict[str, str] | None = None) -> Written:
        """Replace one partition with the Parquet file ``write(path)`` produces (DuckDB
        writing it itself, in bounded memory), committed as written, not re-encoded. The file
        holds the contract's columns but the partition columns (the commit records their
        values) and is written straight into the partition's directory, where no version
        reads it until the commit (a writer killed before it leaves a file that vacuum
        deletes)."""
        partition = {"dataset": key.dataset, "shard": key.shard}
        expected = [(f.name, f.type) for f in schemas.schema_of(table)
                    if f.name not in partition]
        if write_id is not None and (done := self.committed_write(table, write_id)) is not None:
            return done
        relative = (f"dataset={key.dataset}/shard={key.shard}/"
                    f"part-{uuid.uuid4().hex}.zstd.parquet")
        with self._file_in_table(table, relative) as file:
            write(file)
            metadata = pq.read_metadata(file)
            written = metadata.schema.to_arrow_schema()
            if [(f.name, f.type) for f in written] != expected:
                raise LakeError(f"{table} file does not match its contract (less dataset, "
                                f"shard):\n{written}\nexpected:\n{expected}")
            size = file.stat().st_size
        add = AddAction(path=relative, size=size, partition_values=partition,
                        modification_time=int(time.time() * 1000), data_change=True,
                        stats=json.dumps({"numRecords": metadata.num_rows}))
        return self._commit(table, add, partition, write_id, info, rows=metadata.num_rows)

    @contextlib.contextmanager
    def _file_in_table(self, table: str, relative: str) -> Iterator[Path]:
        """A local path to write a table's data file at: the file's place in a local table;
        for a remote one, a temp file uploaded to its place when the block ends. Either way
        it is in no version until a commit adds it, and it is deleted if the block fails."""
        if not self.remote:
            file = self.table_dir(table) / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            try:
                yield file
            except BaseException:
                file.unlink(missing_ok=True)
                raise
            return
        scratch = self.root / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(scratch)
        temp = scratch / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        temp.mkdir()
        try:
            file = temp / "part.parquet"
            yield file
            try:
                self.storage.upload_file(file, "lake", table, relative)
            except BaseException:
                self.storage.delete_file("lake", table, relative)
                raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def write_whole_table(self, table: str, data: pa.Table, *,
                          write_id: str | None = None) -> Written:
        data = schemas.conform(data, schemas.schema_of(table))
        return self._commit(table, data, {}, write_id, None)

    def write_dataset_table(self, table: str, dataset: str, data: pa.Table, *,
                            write_id: str | None = None) -> Written:
        """Replace one dataset's rows of a per-dataset table."""
        data = schemas.conform(data, schemas.schema_of(table))
        others = set(data.column("dataset").to_pylist()) - {dataset}
        if others:
            raise LakeError(f"rows of datasets {sorted(others)} in {table} for {dataset!r}")
        return self._commit(table, data, {"dataset": check_name(dataset, "dataset")},
                            write_id, None)

    def _commit(self, table: str, data: pa.Table | AddAction,
                partition: dict[str, str], write_id: str | None,
                info: dict[str, str] | None, rows: int | None = None) -> Written:
        """One commit replacing ``partition``: ``data`` rows written by delta-rs, or a file
        already in place (an ``AddAction``)."""
        dt = self._table_for_write(table)
        uri = self.table_uri(table)
        if rows is None:
            rows = data.num_rows
        if write_id is not None and (done := _committed(dt, table, uri, write_id)) is not None:
            self._discard(table, data)
            return done
        marker = _partition_app_id(partition)
        transactions = [Transaction(app_id=marker, version=time.time_ns() // 1000)]
        if write_id is not None:
            transactions.append(Transaction(app_id=f"write:{write_id}", version=1))
        token = uuid.uuid4().hex
        metadata = {"malt.partition": marker.removeprefix("partition:"),
                    "malt.rows": rows, "malt.commit": token, **(info or {})}
        if write_id is not None:
            metadata["malt.write"] = write_id
        properties = CommitProperties(custom_metadata=metadata,
                                      max_commit_retries=COMMIT_RETRIES,
                                      app_transactions=transactions)
        try:
            if isinstance(data, AddAction):
                dt.create_write_transaction(
                    [data], mode="overwrite", schema=schemas.schema_of(table),
                    partition_by=partition_columns(table) or None,
                    partition_filters=[(c, "=", v) for c, v in partition.items()],
                    commit_properties=properties)
            else:
                write_deltalake(uri, data, mode="overwrite", predicate=_predicate(partition),
                                partition_by=partition_columns(table) or None,
                                writer_properties=WRITER, commit_properties=properties,
                                storage_options=self.storage.delta_options)
        except CommitFailedError as exc:
            self._discard(table, data)
            if write_id is not None and (done := self.committed_write(table, write_id)):
                return done  # the same write, retried concurrently, won
            where = marker.removeprefix("partition:")
            raise LakeError(f"{table} {where}: another writer committed this partition while "
                            f"this one wrote it; nothing of this write is visible. Retry "
                            f"({str(exc).splitlines()[0][:120]})") from exc
        return Written(table, uri, self._committed_version(table, token), rows)

    def _committed_version(self, table: str, token: str) -> int:
        """The version our commit got (writers of other partitions may have committed
        since)."""
        history = self._open(self.table_uri(table)).history
        for limit in (4, COMMIT_RETRIES + 1):  # a few reads unless many writers committed
            for commit in history(limit=limit):
                if commit.get("malt.commit") == token:
                    return int(commit["version"])
        raise LakeError(f"commit {token} not found in the newest versions of "
                        f"{self.table_uri(table)}")

    def _discard(self, table: str, data: pa.Table | AddAction) -> None:
        """Delete the file of an in-place write that will not be committed."""
        if isinstance(data, AddAction):
            if self.remote:
                self.storage.delete_file("lake", table, data.path)
            else:
                (self.table_dir(table) / data.path).unlink(missing_ok=True)

    def committed_write(self, table: str, write_id: str) -> Written | None:
        """The commit of the write ``write_id``, if it happened (a retry's question)."""
        dt = self.delta_table(table)
        return None if dt is None else _committed(dt, table, self.table_uri(table), write_id)

    # -- reads ----------------------------------------------------------------------------
    def has_partition(self, table: str, key: PartitionKey) -> bool:
        """Whether the partition was ever written (even with zero rows)."""
        dt = self.delta_table(table)
        return dt is not None and _written(dt, key)

    def read_partition(self, table: str, key: PartitionKey,
                       columns: list[str] | None = None) -> pa.Table | None:
        dt = self.delta_table(table)
        if dt is None or not _written(dt, key):
            return None
        dataset = dt.to_pyarrow_dataset(
            partitions=[("dataset", "=", key.dataset), ("shard", "=", key.shard)])
        return _conform_read(dataset.to_table(columns=columns), table, columns)

    def read_required(self, table: str, key: PartitionKey,
                      columns: list[str] | None = None) -> pa.Table:
        """The partition, or an error telling the user which asset to materialize first."""
        data = self.read_partition(table, key, columns)
        if data is None:
            raise LakeError(f"no {table} for partition {key}; materialize `{table}` for it first")
        return data

    def read_whole_table(self, table: str) -> pa.Table | None:
        dt = self.delta_table(table)
        if dt is None or dt.transaction_version(_partition_app_id({})) is None:
            return None
        return _conform_read(dt.to_pyarrow_dataset().to_table(), table, None)

    def dataset(self, table: str, version: int | None = None) -> pads.Dataset | None:
        """The table (at ``version``) as an Arrow dataset (partition values filled in from
        the commit), for readers other than DuckDB. None before the table's first write."""
        dt = self.delta_table(table, version)
        return None if dt is None else dt.to_pyarrow_dataset()

    def data_files(self, table: str, version: int | None = None) -> list[str] | None:
        """The Parquet files of the table's version (latest by default): what DuckDB reads
        with its own Parquet reader. None before the table's first write."""
        dt = self.delta_table(table, version)
        return None if dt is None else dt.file_uris()

    def has_data(self, table: str) -> bool:
        dt = self.delta_table(table)
        return dt is not None and bool(dt.partitions() if partition_columns(table)
                                       else dt.file_uris())

    def partitions(self, table: str) -> list[PartitionKey]:
        """The (dataset, shard) partitions that hold rows."""
        dt = self.delta_table(table)
        if dt is None or table not in schemas.PARTITIONED:
            return []
        return sorted(PartitionKey.from_columns(p["dataset"], p["shard"])
                      for p in dt.partitions())

    def vacuum(self, retain_hours: int, *, dry_run: bool) -> dict[str, list[str]]:
        """Delete the files older than ``retain_hours`` that the latest version does not read:
        replaced partitions' files (earlier versions stop being readable) and files no commit
        ever added (killed writers'). Per table, the files deleted (or that would be, with
        ``dry_run``). While writers may run, keep it at least ``MIN_VACUUM_HOURS`` (the CLI
        does): a writer's file is in no version until its commit."""
        out = {}
        for table in schemas.ALL_TABLES:
            dt = self.delta_table(table)
            if dt is not None:
                out[table] = dt.vacuum(retention_hours=retain_hours, dry_run=dry_run,
                                       enforce_retention_duration=False, full=True)
        return out

    def history(self, table: str) -> list[dict]:
        """The table's commits, newest first (delta-rs' ``history``)."""
        dt = self.delta_table(table)
        return [] if dt is None else dt.history()


def _written(dt: DeltaTable, key: PartitionKey) -> bool:
    """Whether a commit ever replaced the partition (its marker transaction)."""
    marker = _partition_app_id({"dataset": key.dataset, "shard": key.shard})
    return dt.transaction_version(marker) is not None


def _committed(dt: DeltaTable, table: str, uri: str, write_id: str) -> Written | None:
    """The commit of the write ``write_id`` in ``dt``'s snapshot, if it happened."""
    if dt.transaction_version(f"write:{write_id}") is None:
        return None
    for commit in dt.history():
        if commit.get("malt.write") == write_id:
            return Written(table, uri, int(commit["version"]), int(commit.get("malt.rows", 0)),
                           skipped=True)
    return Written(table, uri, dt.version(), 0, skipped=True)


def _partition_app_id(partition: dict[str, str]) -> str:
    if not partition:
        return "partition:*"
    return "partition:" + "/".join(partition[c] for c in ("dataset", "shard") if c in partition)


def _predicate(partition: dict[str, str]) -> str | None:
    """The overwrite predicate of one partition (values are checked names; quotes doubled)."""
    if not partition:
        return None
    return " AND ".join(f"{column} = '{value.replace(chr(39), chr(39) * 2)}'"
                        for column, value in partition.items())


def _conform_read(data: pa.Table, table: str, columns: list[str] | None) -> pa.Table:
    schema = schemas.schema_of(table)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    return data.select(schema.names).cast(schema)


def _rows_outside(data: pa.Table, key: PartitionKey) -> int:
    if data.num_rows == 0:
        return 0
    datasets = data.column("dataset").to_pylist()
    shards = data.column("shard").to_pylist()
    return sum(1 for d, s in zip(datasets, shards, strict=True)
               if d != key.dataset or s != key.shard)


def atomic_write(data: pa.Table, target: Path) -> Path:
    """Write ``data`` to ``target`` via temp file + rename (for files outside the tables:
    expansion checkpoints)."""
    return atomic_file(target, lambda temp: pq.write_table(data, temp, compression="zstd"))


@contextlib.contextmanager
def partition_lock(lake: Lake, table: str, key: PartitionKey | None = None) -> Iterator[None]:
    """Hold an exclusive lock on one partition (or a whole table) while it is computed.

    A second writer fails at once with a clear message instead of racing the first.
    """
    name = table if key is None else f"{table}.{key.key}"
    path = lake.root / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LakeError(
                f"{name} is being written by another run (pid {holder}); wait for it to "
                "finish or stop it, then retry"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
