"""Shared fixtures: a temp warehouse per test (local, or a bucket of a real S3 server), the
shared datasets by path setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from malt_lake.lake import Lake
from tests.s3 import moto_server, new_lake_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def datasets_dir() -> Path:
    """The team's shared train/dev JSONL (``MALT_DATASETS_DIR``, default ../shared/datasets)."""
    path = Path(os.environ.get("MALT_DATASETS_DIR", REPO.parent / "shared" / "datasets"))
    if not (path / "gsm8k" / "dev.jsonl").is_file():
        pytest.skip(f"shared datasets not found at {path}; set MALT_DATASETS_DIR")
    return path


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "warehouse"
    root.mkdir()
    monkeypatch.setenv("MALT_WAREHOUSE", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("MALT_CONFIG", raising=False)
    return root


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the session (each test gets its own bucket)."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> dict[str, str]:
    """A warehouse in a fresh bucket (``MALT_WAREHOUSE=s3://<bucket>/wh``), set in this
    process's environment; the dict is what a subprocess needs besides os.environ."""
    env = new_lake_env(s3_endpoint, tmp_path / "work")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MALT_CONFIG", raising=False)
    return env


@pytest.fixture
def lake(warehouse: Path) -> Lake:
    return Lake(warehouse)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path
