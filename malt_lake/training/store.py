"""Adapters on disk: ``<warehouse>/adapters/<dataset>/<role>/<version>/`` plus a ``CURRENT``
pointer per dataset and role (each benchmark has its own adapter set, as in the paper).

A version is built in a temp directory (weights, stage adapters, loss plot, and the manifest
last) and renamed into place, so every visible version directory is complete. ``CURRENT`` is
a one-line file replaced atomically; readers resolve it, so they see the old adapter or the
new one, never a half-written directory. Versions are named by a hash of everything that
decides the weights (base model, recipe, rows), so a rerun with the same inputs finds its
version and reuses it.

In a remote warehouse (``s3://``) the store is the object store's ``adapters/`` prefix: a
version built locally is uploaded manifest last (a version is there once its manifest is),
then ``CURRENT`` is replaced (one PUT). Readers fetch a version they lack into this
machine's copy of the warehouse (``Lake.root``) and load it from there. A version is named by
its inputs, so a copy stays valid; only ``--force-train`` rewrites a version in place, and a
machine that fetched it before keeps its earlier copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from malt_lake.errors import ConfigError, LakeError
from malt_lake.lake import Lake
from malt_lake.names import check_name
from malt_lake.storage import TEMP_PREFIX, remove_stale_temps

MANIFEST = "manifest.json"
POINTER = "CURRENT"
SFT_STAGE = Path("stages") / "sft"  # inside a version: the adapter before DPO, when DPO ran


class AdapterStore:
    """One dataset's adapters (every role, every version), in the warehouse of ``lake`` (a
    Lake, or a local warehouse's path)."""

    def __init__(self, lake: Lake | str | Path, dataset: str) -> None:
        lake = lake if isinstance(lake, Lake) else Lake(lake)
        self.dataset = check_name(dataset, "dataset")
        self.storage = lake.storage
        # the store itself when local; this machine's copies of its versions when remote
        self.root = lake.root / "adapters" / self.dataset

    def role_dir(self, role: str) -> Path:
        return self._inside(self.root / check_name(role, "role"))

    def version_dir(self, role: str, version: str) -> Path:
        return self._inside(self.role_dir(role) / check_name(version, "adapter version"))

    def _remote(self, role: str, *parts: str) -> tuple[str, ...]:
        return ("adapters", self.dataset, check_name(role, "role"), *parts)

    def has(self, role: str, version: str) -> bool:
        if self.storage.remote:
            return self.storage.exists(*self._remote(role, version, MANIFEST))
        return (self.version_dir(role, version) / MANIFEST).is_file()

    def current(self, role: str) -> Path | None:
        """The published adapter of ``role`` (a local directory), or None if none was
        trained yet."""
        if self.storage.remote:
            pointer = self.storage.read_bytes(*self._remote(role, POINTER))
            if pointer is None:
                return None
            return self._local_copy(role, pointer.decode("utf-8").strip())
        pointer = self.role_dir(role) / POINTER
        if not pointer.is_file():
            return None
        directory = self.version_dir(role, pointer.read_text(encoding="utf-8").strip())
        if not (directory / MANIFEST).is_file():
            raise LakeError(f"{pointer} points at {directory}, which has no {MANIFEST}; "
                            "rematerialize the adapter asset")
        return directory

    def current_paths(self, roles: tuple[str, ...]) -> dict[str, str | None]:
        """{role: published adapter dir or None}: what generation and evaluation use."""
        return {role: (str(d) if (d := self.current(role)) else None) for role in roles}

    def current_sft_paths(self, roles: tuple[str, ...]) -> dict[str, str | None]:
        """{role: the published adapter as it was after SFT, or None}: its saved SFT stage
        when DPO ran on top, else the adapter itself (for the SFT-only ablation)."""
        paths: dict[str, str | None] = {}
        for role in roles:
            directory = self.current(role)
            if directory is not None and (directory / SFT_STAGE / "adapter_config.json"
                                          ).is_file():
                directory = directory / SFT_STAGE
            paths[role] = str(directory) if directory else None
        return paths

    def manifest(self, directory: Path) -> dict[str, Any]:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))

    def versions(self, role: str) -> list[str]:
        if self.storage.remote:
            selector = pafs.FileSelector(self.storage.path(*self._remote(role)),
                                         allow_not_found=True)
            names = [i.base_name for i in self.storage.filesystem.get_file_info(selector)
                     if i.type == pafs.FileType.Directory]
            return sorted(n for n in names if self.has(role, n))
        base = self.role_dir(role)
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and (p / MANIFEST).is_file()) if base.is_dir() else []

    @contextlib.contextmanager
    def building(self, role: str, version: str) -> Iterator[Path]:
        """A temp dir to build ``version`` in; on success it is renamed into place."""
        target = self.version_dir(role, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)
        temp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            yield temp
            if not (temp / MANIFEST).is_file():
                raise LakeError(f"adapter build of {role}/{version} wrote no {MANIFEST}")
            if target.exists():  # a forced retrain of the same inputs: swap directories
                old = target.parent / f"{TEMP_PREFIX}{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
                os.replace(target, old)
                os.replace(temp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, target)
            if self.storage.remote:
                self._upload(role, version, target)
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def _upload(self, role: str, version: str, directory: Path) -> None:
        """Copy a built version to the object store, its manifest last. A forced retrain of
        a version that is there already takes its manifest away first, so until the new one
        lands the version counts as absent rather than complete with mixed files."""
        self.storage.delete_file(*self._remote(role, version, MANIFEST))
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        for file in sorted(files, key=lambda p: p == directory / MANIFEST):
            self.storage.upload_file(file, *self._remote(
                role, version, *file.relative_to(directory).parts))

    def _local_copy(self, role: str, version: str) -> Path:
        """A remote version's local directory, fetched the first time it is asked for."""
        directory = self.version_dir(role, version)
        if (directory / MANIFEST).is_file():
            return directory
        if not self.has(role, version):
            raise LakeError(f"{self.storage.uri(*self._remote(role, POINTER))} points at "
                            f"{version}, which has no {MANIFEST}; rematerialize the adapter "
                            "asset")
        self.storage.download_tree(directory, *self._remote(role, version))
        return directory

    def publish(self, role: str, version: str) -> Path:
        """Point ``CURRENT`` at ``version`` (atomic replace of a one-line file)."""
        if self.storage.remote:
            directory = self._local_copy(role, version)
            self.storage.write_bytes(f"{version}\n".encode(), *self._remote(role, POINTER))
            return directory
        directory = self.version_dir(role, version)
        if not (directory / MANIFEST).is_file():
            raise LakeError(f"cannot publish {directory}: it has no {MANIFEST}")
        pointer = self.role_dir(role) / POINTER
        temp = pointer.with_name(f"{TEMP_PREFIX}{os.getpid()}-{POINTER}")
        temp.write_text(version + "\n", encoding="utf-8")
        os.replace(temp, pointer)
        return directory

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ConfigError(f"adapter path {path} escapes {self.root}")
        return resolved


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    temp = directory / f"{MANIFEST}.partial"
    temp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str),
                    encoding="utf-8")
    os.replace(temp, directory / MANIFEST)
