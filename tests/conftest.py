"""Shared fixtures: a temp warehouse per test, the shared datasets by path setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from malt_lake.lake import Lake

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
