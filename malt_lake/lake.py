"""The lake on disk: hive-partitioned Parquet, one file per partition, written atomically.

Layout: ``<root>/lake/<table>/dataset=<d>/shard=<s>/data.parquet`` for partitioned tables and
``<root>/lake/<table>/data.parquet`` for whole tables. A write goes to a temp file in the same
directory and is renamed over the old file, so a reader sees the old partition or the new one,
never a mix, and a crash leaves at most a stray temp file (removed on the next write). A rewrite
replaces the partition; nothing ever appends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from malt_lake import schemas
from malt_lake.errors import LakeError
from malt_lake.names import PartitionKey, check_name

DATA_FILE = "data.parquet"
TEMP_PREFIX = ".tmp-"


class Lake:
    """Paths and atomic reads/writes under one warehouse root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def tables_dir(self) -> Path:
        return self.root / "lake"

    def table_dir(self, table: str) -> Path:
        return self._inside(self.tables_dir / check_name(table, "table"))

    def partition_dir(self, table: str, key: PartitionKey) -> Path:
        return self._inside(
            self.table_dir(table) / f"dataset={key.dataset}" / f"shard={key.shard}"
        )

    def partition_file(self, table: str, key: PartitionKey) -> Path:
        return self.partition_dir(table, key) / DATA_FILE

    def whole_table_file(self, table: str) -> Path:
        return self.table_dir(table) / DATA_FILE

    def dataset_file(self, table: str, dataset: str) -> Path:
        """Tables with one file per dataset (evaluation): ``<table>/dataset=<d>/``."""
        return self._inside(self.table_dir(table) / f"dataset={check_name(dataset, 'dataset')}"
                            / DATA_FILE)

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise LakeError(f"path {path} escapes the warehouse {self.root}")
        return resolved

    # -- writes ---------------------------------------------------------------------------
    def write_partition(self, table: str, key: PartitionKey, data: pa.Table) -> Path:
        """Replace one partition of ``table`` with ``data`` (conformed to the table contract)."""
        data = schemas.conform(data, schemas.schema_of(table))
        bad = _rows_outside(data, key)
        if bad:
            raise LakeError(f"{bad} row(s) do not belong to partition {key} of {table}")
        return _atomic_write(data, self.partition_file(table, key))

    def write_partition_with(self, table: str, key: PartitionKey,
                             write: Callable[[Path], None]) -> Path:
        """Replace one partition with a file that ``write(temp_path)`` produces (e.g. DuckDB
        writing Parquet itself, in bounded memory). Same guarantees as ``write_partition``:
        the file's schema must be the table contract, then temp file + rename."""
        schema = schemas.schema_of(table)

        def check(temp: Path) -> None:
            written = pq.read_schema(temp)
            if [(f.name, f.type) for f in written] != [(f.name, f.type) for f in schema]:
                raise LakeError(f"{table} file does not match its contract:\n{written}\n"
                                f"expected:\n{schema}")

        return _atomic_file(self.partition_file(table, key), write, check)

    def write_whole_table(self, table: str, data: pa.Table) -> Path:
        data = schemas.conform(data, schemas.schema_of(table))
        return _atomic_write(data, self.whole_table_file(table))

    def write_dataset_table(self, table: str, dataset: str, data: pa.Table) -> Path:
        """Replace one dataset's file of a per-dataset table."""
        data = schemas.conform(data, schemas.schema_of(table))
        others = set(data.column("dataset").to_pylist()) - {dataset}
        if others:
            raise LakeError(f"rows of datasets {sorted(others)} in {table} for {dataset!r}")
        return _atomic_write(data, self.dataset_file(table, dataset))

    # -- reads ----------------------------------------------------------------------------
    def read_partition(self, table: str, key: PartitionKey) -> pa.Table | None:
        file = self.partition_file(table, key)
        return pq.read_table(file) if file.exists() else None

    def read_required(self, table: str, key: PartitionKey) -> pa.Table:
        """The partition, or an error telling the user which asset to materialize first."""
        data = self.read_partition(table, key)
        if data is None:
            raise LakeError(f"no {table} for partition {key}; materialize `{table}` for it first")
        return data

    def read_whole_table(self, table: str) -> pa.Table | None:
        file = self.whole_table_file(table)
        return pq.read_table(file) if file.exists() else None

    def has_data(self, table: str) -> bool:
        return any(self.data_files(table))

    def data_files(self, table: str) -> Iterator[Path]:
        directory = self.table_dir(table)
        if not directory.exists():
            return iter(())
        return directory.rglob(DATA_FILE)

    def partitions(self, table: str) -> list[PartitionKey]:
        keys = []
        for file in self.data_files(table):
            shard, dataset = file.parent.name, file.parent.parent.name
            if dataset.startswith("dataset=") and shard.startswith("shard="):
                keys.append(
                    PartitionKey.from_columns(dataset.removeprefix("dataset="),
                                              shard.removeprefix("shard="))
                )
        return sorted(keys)


def _rows_outside(data: pa.Table, key: PartitionKey) -> int:
    if data.num_rows == 0:
        return 0
    datasets = data.column("dataset").to_pylist()
    shards = data.column("shard").to_pylist()
    return sum(1 for d, s in zip(datasets, shards, strict=True)
               if d != key.dataset or s != key.shard)


def atomic_write(data: pa.Table, target: Path) -> Path:
    """Write ``data`` to ``target`` via temp file + rename (for files outside table layout)."""
    return _atomic_write(data, target)


def _atomic_write(data: pa.Table, target: Path) -> Path:
    return _atomic_file(target, lambda temp: pq.write_table(data, temp, compression="zstd"))


def _atomic_file(target: Path, write: Callable[[Path], None],
                 check: Callable[[Path], None] | None = None) -> Path:
    """``write(temp)`` in the target's directory, ``check(temp)``, fsync, rename over target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    temp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.parquet.partial"
    try:
        write(temp)
        if check is not None:
            check(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return target


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files and directories (``.tmp-<pid>-...``) left by writers that died."""
    for temp in directory.glob(f"{TEMP_PREFIX}*"):
        pid = temp.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
