"""A non-editable install works away from the repository: the wheel carries the SQL files,
prompts and recipes, and the lake goes to ./warehouse under the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (links kept as links), without build leftovers:
    a stale ``build/`` would hand the wheel files the package data no longer names."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = source_copy(tmp_path_factory.mktemp("source"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(source)], check=True)
    [built] = out.glob("malt_lake-*.whl")
    return built


def test_the_wheel_carries_every_sql_file_as_a_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name.removeprefix("malt_lake/sql/"): archive.read(name)
                    for name in archive.namelist() if name.startswith("malt_lake/sql/")}
        names = archive.namelist()
    in_repo = {str(p.relative_to(ROOT / "sql")): p.read_bytes()
               for p in (ROOT / "sql").rglob("*.sql")}
    assert packaged == in_repo
    assert any(n.startswith("malt_lake/prompts/templates/") for n in names)
    assert any(n.startswith("malt_lake/training/recipes/") for n in names)
    assert any(n.startswith("assets/") for n in names)


def test_installed_package_runs_from_another_directory(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(target), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in {"MALT_WAREHOUSE", "DAGSTER_HOME", "MALT_CONFIG"}}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install of this checkout

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from assets.cli import main; main()",
                               *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)

    where = subprocess.run(
        [sys.executable, "-c", "import malt_lake, malt_lake.sqlfiles as s, malt_lake.settings "
         "as t; print(malt_lake.__file__); print(s.SQL_DIR); print(t.warehouse_root())"],
        cwd=work, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert where[0].startswith(str(target)) and where[1].startswith(str(target))
    assert where[2] == str(work / "warehouse")

    ingest = cli("ingest")
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    count = cli("sql", "select count(*) as n from questions", "--format", "csv")
    assert count.returncode == 0, count.stderr
    assert int(count.stdout.split()[1]) > 0
    assert (work / "warehouse" / "lake" / "questions").is_dir()
    assert not list(target.rglob("*.parquet")), "the lake went inside the installed package"
