"""Where a warehouse lives: a local directory, or a prefix in an S3-compatible object store
(``MALT_WAREHOUSE=s3://bucket/prefix``).

The Delta tables go to the location through delta-rs (its own object store client, commits
made safe between machines by S3's conditional puts); every other file of the warehouse
(expansion checkpoints, adapters, reports) goes through Arrow's filesystem layer, so one
code path serves both kinds. A remote warehouse also has a local directory on each machine
(``local_dir``) for what cannot live in an object store: the Dagster instance's SQLite files,
the partition locks of this machine's runs, the adapters loaded from it and temp files.

A file is written whole or not at all on both kinds: locally through a temp file renamed
into place, remotely as one PUT (an upload cut short completes nothing). Credentials come
from the usual AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
instance roles); ``AWS_ENDPOINT_URL`` points at any S3-compatible store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from functools import cache, cached_property
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from malt_lake.environment import environment
from malt_lake.errors import ConfigError

TEMP_PREFIX = ".tmp-"  # local temp files and directories: .tmp-<pid>-...
REMOTE_SCHEMES = ("s3",)
DEFAULT_REGION = "us-east-1"  # what S3-compatible stores (MinIO, moto) accept


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` names an object store prefix (``s3://...``)."""
    return isinstance(location, str) and urlsplit(location).scheme in REMOTE_SCHEMES


def join(location: str | Path, *parts: str) -> str | Path:
    """``location`` with ``parts`` under it: a URI stays a URI, a path a Path."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return Path(location).joinpath(*parts)


def normalize(location: str | Path) -> str | Path:
    """A remote location without its trailing slash; a local one absolute."""
    if is_remote(location):
        split = urlsplit(str(location))
        if not split.netloc:
            raise ConfigError(f"warehouse {location!r} names no bucket (s3://bucket/prefix)")
        return f"{split.scheme}://{split.netloc}{split.path.rstrip('/')}"
    text = str(location)
    if "://" in text:
        raise ConfigError(f"warehouse {text!r}: only local paths and s3:// URIs are supported")
    return Path(text).expanduser().resolve()


class Storage:
    """One warehouse location and the filesystem that reaches it."""

    def __init__(self, location: str | Path) -> None:
        self.location = normalize(location)
        self.remote = isinstance(self.location, str)

    def __repr__(self) -> str:
        return f"Storage({str(self.location)!r})"

    # -- addressing -----------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """What delta-rs and users are given: ``s3://bucket/prefix/<parts>`` or a path."""
        return str(join(self.location, *parts))

    def path(self, *parts: str) -> str:
        """The filesystem's own path of ``parts``: ``bucket/prefix/<parts>`` remotely."""
        uri = self.uri(*parts)
        return uri.split("://", 1)[1] if self.remote else uri

    @cached_property
    def local_dir(self) -> Path:
        """This machine's directory for the warehouse: the warehouse itself when local; when
        remote, one named after the location under ``MALT_WORK_DIR`` (else under the user
        cache), so a study's or a later round's lake never shares an instance or locks with
        the warehouse it sits in."""
        if not self.remote:
            return Path(self.location)
        chosen = environment().work_dir
        base = Path(chosen).expanduser() if chosen else \
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "malt-lake"
        split = urlsplit(str(self.location))
        name = f"{split.netloc}{split.path}".replace("/", "_")
        digest = hashlib.sha256(str(self.location).encode()).hexdigest()[:8]
        return (base / "warehouses" / f"{name}-{digest}").resolve()

    @property
    def bucket(self) -> str:
        return urlsplit(str(self.location)).netloc

    @cached_property
    def region(self) -> str:
        """``AWS_REGION``; else, on AWS itself, the bucket's own region (asked once); else
        the region S3-compatible stores accept."""
        chosen = environment().aws_region
        if chosen:
            return chosen
        if not environment().aws_endpoint_url:
            return _bucket_region(self.bucket)
        return DEFAULT_REGION

    def check(self) -> None:
        """A remote warehouse's bucket answers, or a ConfigError saying which setting to
        look at (rather than a client's traceback minutes of retries later)."""
        if not self.remote:
            return
        endpoint = environment().aws_endpoint_url
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"AWS_ENDPOINT_URL={endpoint!r} needs its scheme "
                              "(http://host:port or https://host)")
        where = f" at {endpoint}" if endpoint else ""
        try:
            info = self.filesystem.get_file_info(self.bucket)
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the warehouse {self.location}{where}: "
                f"{str(exc).splitlines()[0][:200]}. Check AWS_ENDPOINT_URL, AWS_REGION and "
                "the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)"
            ) from None
        if info.type == pafs.FileType.NotFound:
            raise ConfigError(f"bucket {self.bucket!r}{where} does not exist; create it or "
                              f"fix MALT_WAREHOUSE ({self.location})")

    # -- clients --------------------------------------------------------------------------
    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        if not self.remote:
            return pafs.LocalFileSystem()
        endpoint = environment().aws_endpoint_url
        options: dict = {"region": self.region, "connect_timeout": 10,
                         "request_timeout": 60,
                         "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
        if endpoint:
            split = urlsplit(endpoint)
            options["endpoint_override"] = split.netloc or endpoint
            options["scheme"] = split.scheme or "https"
        return pafs.S3FileSystem(**options)

    @cached_property
    def delta_options(self) -> dict[str, str] | None:
        """delta-rs storage options: the endpoint and region, and conditional puts, which
        make a commit fail rather than overwrite another machine's (no lock service)."""
        if not self.remote:
            return None
        options = {"AWS_REGION": self.region, "aws_conditional_put": "etag"}
        endpoint = environment().aws_endpoint_url
        if endpoint:
            options["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    # -- files ----------------------------------------------------------------------------
    def is_dir(self, *parts: str) -> bool:
        """Whether ``parts`` is a directory (remotely: a prefix holding any key)."""
        return self.filesystem.get_file_info(self.path(*parts)).type == pafs.FileType.Directory

    def exists(self, *parts: str) -> bool:
        return self.filesystem.get_file_info(self.path(*parts)).type == pafs.FileType.File

    def read_bytes(self, *parts: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        try:
            with self.filesystem.open_input_stream(self.path(*parts)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write one file whole or not at all (temp file + rename locally, one PUT
        remotely)."""
        if self.remote:
            with self.filesystem.open_output_stream(self.path(*parts)) as stream:
                stream.write(data)
            return
        atomic_file(Path(self.path(*parts)), lambda temp: temp.write_bytes(data))

    def list_files(self, *parts: str, prefix: str = "", suffix: str = "") -> list[str]:
        """The names of the files directly under ``parts`` that start with ``prefix`` and
        end with ``suffix``, sorted; none if the directory is missing."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        names = (info.base_name for info in self.filesystem.get_file_info(selector)
                 if info.type == pafs.FileType.File)
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix))

    def delete_tree(self, *parts: str) -> None:
        """Delete a directory and everything under it (nothing if it is missing)."""
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(self.path(*parts))

    def delete_file(self, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self.path(*parts))

    def upload_file(self, local: Path, *parts: str) -> None:
        """Copy one local file to ``parts`` (one PUT, or one multipart upload)."""
        pafs.copy_files(str(local), self.path(*parts), destination_filesystem=self.filesystem)

    def download_tree(self, local: Path, *parts: str) -> None:
        """Copy the files under ``parts`` into the local directory ``local`` whole: they
        are fetched into a temp directory beside it that is renamed into place."""
        local.parent.mkdir(parents=True, exist_ok=True)
        temp = local.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            pafs.copy_files(self.path(*parts), str(temp), source_filesystem=self.filesystem)
            with contextlib.suppress(FileExistsError, OSError):
                os.replace(temp, local)  # another process fetched the same files first
        finally:
            shutil.rmtree(temp, ignore_errors=True)


@cache
def _bucket_region(bucket: str) -> str:
    """An AWS bucket's region, asked once per process (every Lake has its own Storage)."""
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return DEFAULT_REGION  # check() names the bucket that cannot be reached


def atomic_file(target: Path, write: Callable[[Path], None]) -> Path:
    """``write(temp)`` in the target's directory, fsync, rename over target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    temp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.partial"
    try:
        write(temp)
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
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
