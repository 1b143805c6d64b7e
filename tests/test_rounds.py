"""Iterative MALT through the CLI: round 2 expands with round 1's adapters, in its own lake."""

from __future__ import annotations

import duckdb

from malt_lake.training.store import AdapterStore
from tests.test_reliability import env_for, run_cli

ROLES = ("generator", "verifier", "refiner")
EXPANSION = {"generator": "generations", "verifier": "critiques", "refiner": "refinements"}


def _adapters_used(lake_dir, table: str) -> set[str | None]:
    files = str(lake_dir / table / "**" / "*.parquet")
    return {r[0] for r in duckdb.sql("select distinct adapter from read_parquet($f)",
                                     params={"f": files}).fetchall()}


def test_two_rounds_each_expand_with_the_previous_rounds_adapters(tmp_path):
    root = tmp_path / "warehouse"
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('base_model = "embedded"\n[sft]\nmax_steps = 1\nmin_rows = 1\n'
                      '[dpo]\nmax_steps = 1\nmin_rows = 1\n')
    proc = run_cli(env_for(root, MALT_RECIPE=str(recipe)), "rounds", "--k", "2",
                   "--seeds", "1", "--max-tokens", "16", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 1" in proc.stdout and "round 2" in proc.stdout
    round_two = root / "rounds" / "round-2"
    first = AdapterStore(root).current_paths(ROLES)
    second = AdapterStore(round_two).current_paths(ROLES)
    # the fake backend's generator is never right, so G has no positives to train on; V and R
    # train in both rounds
    assert first["verifier"] and first["refiner"] and second["verifier"] and second["refiner"]
    for role, table in EXPANSION.items():
        # round 1 expands with the base model, round 2 with round 1's adapter for that role
        # (the base where round 1 trained none)
        assert _adapters_used(root / "lake", table) == {None}
        assert _adapters_used(round_two / "lake", table) == {first[role]}
        if second[role]:
            assert second[role].startswith(str(round_two))  # fresh, in round 2's own lake
    for lake_dir in (root / "lake", round_two / "lake"):
        systems = duckdb.sql("select count(distinct system) from read_parquet($f)",
                             params={"f": str(lake_dir / "eval_predictions" / "**" /
                                              "*.parquet")}).fetchall()[0][0]
        assert systems == 6
