"""Iterative MALT through the CLI: round 2 expands with round 1's adapters, in its own lake,
and is its own set of assets (``round_2/...``) in Dagster, as the UI's GraphQL API shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

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


GRAPHQL = Path(sys.executable).with_name("dagster-graphql")
KEY = "arith.train.0000"
QUERY = """
fragment materializations on Asset {
  assetMaterializations(partitions: [$partition]) {
    runId
    metadataEntries { label ... on PathMetadataEntry { path } ... on TextMetadataEntry { text } }
  }
}
query ($partition: String!) {
  repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } }
  assetNodes { assetKey { path } groupName dependencyKeys { path } }
  runsOrError { ... on Runs { results { runId jobName } } }
  one: assetOrError(assetKey: {path: ["credit"]}) { ...materializations }
  two: assetOrError(assetKey: {path: ["round_2", "credit"]}) { ...materializations }
  critiques: assetOrError(assetKey: {path: ["round_2", "critiques"]}) { ...materializations }
}
"""


def _graphql(env: dict, out: Path) -> dict:
    """What the UI sees: the definitions and the instance through Dagster's GraphQL API."""
    proc = subprocess.run([str(GRAPHQL), "-m", "assets.definitions", "-t", QUERY, "-o",
                           str(out), "-v", json.dumps({"partition": KEY})], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    response = json.loads(out.read_text())
    assert "errors" not in response, response["errors"]
    return response["data"]


def _entries(materialization: dict) -> dict:
    return {e["label"]: e.get("path", e.get("text")) for e in materialization["metadataEntries"]}


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

    # Dagster: round 2 is its own assets and jobs, with its own materializations
    env = env_for(root, MALT_RECIPE=str(recipe))
    data = _graphql(env, tmp_path / "graphql.json")
    jobs = {job["name"] for node in data["repositoriesOrError"]["nodes"] for job in node["jobs"]}
    assert {"tree", "adapters", "evaluate", "round_2_tree", "round_2_adapters",
            "round_2_evaluate", "round_2_relabel"} <= jobs
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert nodes["round_2/credit"]["groupName"] == "round_2_credit"
    assert {"/".join(d["path"]) for d in nodes["round_2/critiques"]["dependencyKeys"]} == {
        "round_2/generations", "verifier_adapter"}  # expands with round 1's verifier
    ran = {run["jobName"] for run in data["runsOrError"]["results"]}
    assert {"tree", "round_2_tree", "adapters", "round_2_adapters", "round_2_evaluate"} <= ran
    one, two = data["one"]["assetMaterializations"], data["two"]["assetMaterializations"]
    assert len(one) == 1 and len(two) == 1 and one[0]["runId"] != two[0]["runId"]
    assert _entries(one[0])["path"] == str((root / "lake" / "credit").resolve())
    assert _entries(two[0])["path"] == str((round_two / "lake" / "credit").resolve())
    assert _entries(data["critiques"]["assetMaterializations"][0])["adapter"] == first["verifier"]

    # the launchpad's way: a round-2 job with no adapter config relabels round 2 alone
    before = DeltaTable(str(root / "lake" / "credit")).version()
    proc = run_cli(env, "materialize", "--round", "2", "--select", "relabel", "--partition",
                   KEY, "--theta", "0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert DeltaTable(str(root / "lake" / "credit")).version() == before
    proc = run_cli(env, "sql", "--round", "2", "--format", "json",
                   "select distinct dataset || '.' || shard as key, theta from credit")
    assert proc.returncode == 0, proc.stderr
    thetas = {row["key"]: row["theta"] for row in json.loads(proc.stdout)}
    assert thetas[KEY] == 0.2 and len(thetas) > 1, thetas
    assert {theta for key, theta in thetas.items() if key != KEY} == {0.5}

    # a round the graph does not hold is one line, before anything runs
    proc = run_cli(env_for(root, MALT_ROUNDS="1"), "materialize", "--round", "2", "--select",
                   "relabel", "--partition", KEY)
    assert proc.returncode == 2 and "MALT_ROUNDS=2" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
