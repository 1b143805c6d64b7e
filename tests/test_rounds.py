"""Iterative MALT through the CLI: round 2 expands with round 1's adapters, in its own lake."""

from __future__ import annotations

from malt_lake.lake import Lake
from malt_lake.query import run_read_only
from malt_lake.training.store import AdapterStore
from tests.test_reliability import env_for, run_cli

DATASET = "arith"  # the only dataset configured by default
ROLES = ("generator", "verifier", "refiner")
EXPANSION = {"generator": "generations", "verifier": "critiques", "refiner": "refinements"}


def _adapters_used(root, table: str) -> set[str | None]:
    return set(run_read_only(Lake(root), f"select distinct adapter from {table}"
                             ).column("adapter").to_pylist())


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
    first = AdapterStore(root, DATASET).current_paths(ROLES)
    second = AdapterStore(round_two, DATASET).current_paths(ROLES)
    # The fake backend answers with a hash-drawn number (rarely right), so no answer's value
    # (the mean of its refinements' rewards) beats theta 0.5: G has no positives, hence no
    # adapter, in either round. V and R train in both rounds, each into its round's warehouse.
    assert first["generator"] is None and second["generator"] is None
    for role in ("verifier", "refiner"):
        assert first[role] is not None and second[role] is not None
        assert first[role].startswith(f"{root.resolve()}/adapters/{DATASET}/{role}/")
        assert second[role].startswith(f"{round_two.resolve()}/adapters/{DATASET}/{role}/")
    # round 1 expands every role with the base model; round 2 expands V and R with round 1's
    # adapters of that role, and G with the base (round 1 trained no G adapter)
    round_two_uses = {"generator": None, "verifier": first["verifier"],
                      "refiner": first["refiner"]}
    for role, table in EXPANSION.items():
        assert _adapters_used(root, table) == {None}, table
        assert _adapters_used(round_two, table) == {round_two_uses[role]}, table
    for warehouse in (root, round_two):
        systems = run_read_only(Lake(warehouse), "select count(distinct system) n "
                                                 "from eval_predictions").to_pylist()
        assert systems == [{"n": 6}]
