"""The Dagster UI as a user drives it: start `malt-lake ui`, press Materialize (the GraphQL
launchRun mutation the button sends) for one partition, and watch the run finish and the lake
change. Runs with MALT_ENV=test, so the backend is the fast fake one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from malt_lake.lake import Lake
from malt_lake.names import PartitionKey
from tests.ports import free_port

KEY = "arith.train.0000"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = """
query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name } } } } } } }"""
ASSETS = """
query { assetNodes { assetKey { path } isPartitioned } }"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def ui_env(tmp_path: Path) -> dict:
    env = {**os.environ, "MALT_ENV": "test", "MALT_WAREHOUSE": str(tmp_path / "warehouse"),
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.pop("MALT_CONFIG", None)
    return env


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assets.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_ui_materializes_a_partition_through_graphql(ui_env, tmp_path):
    ingest = cli(ui_env, "ingest")
    assert ingest.returncode == 0, ingest.stderr
    port = free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([sys.executable, "-m", "assets.cli", "ui", "--port", str(port)],
                              env=ui_env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info",
                                                timeout=5).status == 200, 180, "the webserver")
        entries = wait_for(lambda: [
            e for e in graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
            if e["locationOrLoadError"]
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"], 180,
            "the code location to load")
        location = entries[0]["name"]
        repository = entries[0]["locationOrLoadError"]["repositories"][0]["name"]
        assets = {tuple(a["assetKey"]["path"]) for a in graphql(port, ASSETS)["assetNodes"]}
        assert {("generations",), ("credit",), ("refiner_adapter",), ("evaluation",)} <= assets

        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": repository,
                         "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["generations"]}]},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": KEY}]},
            "runConfigData": {"ops": {"generations": {"config": {"n": 2}}}},
        }
        launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status = wait_for(lambda: (s := graphql(port, STATUS, {"id": run_id})["runOrError"]
                                   ["status"]) in {"SUCCESS", "FAILURE", "CANCELED"} and s,
                          240, "the run to finish")
        assert status == "SUCCESS", (tmp_path / "ui.log").read_text()[-3000:]
        table = Lake(ui_env["MALT_WAREHOUSE"]).read_required(
            "generations", PartitionKey.parse(KEY))
        assert table.num_rows == 16 * 2 and set(table.column("n_samples").to_pylist()) == {2}
        # the CLI sees the same run history the UI does
        listed = cli(ui_env, "sql", "select count(*) n from generations", "--format", "json")
        assert json.loads(listed.stdout) == [{"n": 32}]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
