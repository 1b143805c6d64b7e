"""One source of configuration: environment variables read in one place, and the Dagster
config classes and resources are the library's typed settings (same fields, defaults and
bounds), not copies."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from assets.evaluation import EvalConfig
from assets.expansion import ExpandConfig, expansion_assets
from assets.resources import BackendResource, resources_for_env
from malt_lake.backends import BackendSettings, build_backend
from malt_lake.environment import VARIABLES, environment
from malt_lake.errors import ConfigError
from malt_lake.evaluate import EvalSettings
from malt_lake.expand import RoleSettings
from tests.resources import asset_resources


def _fields(model: type) -> dict[str, tuple]:
    return {name: (str(info.annotation), info.default, repr(info.metadata))
            for name, info in model.model_fields.items()}


def test_config_classes_are_the_library_settings():
    assert _fields(ExpandConfig) == _fields(RoleSettings)
    assert _fields(BackendResource) == _fields(BackendSettings)
    assert {k: v for k, v in _fields(EvalConfig).items() if k != "ablations"} \
        == _fields(EvalSettings)
    # the openai fields the resource once dropped reach the backend
    engine = build_backend(BackendResource(kind="openai", model="m", base_url="http://x/v1",
                                           api_key="secret", concurrency=3))
    assert (engine.api_key, engine.concurrency) == ("secret", 3)
    assert EvalConfig(seeds=2, ablations=True).settings() == EvalSettings(seeds=2)


def test_a_dagster_run_refuses_out_of_bounds_config(lake, instance):
    instance.add_dynamic_partitions("shards", ["arith.train.0000"])
    result = dg.materialize(
        expansion_assets(1)[:1], partition_key="arith.train.0000", resources=asset_resources(lake),
        instance=instance, run_config={"ops": {"generations": {"config": {"n": 0}}}},
        raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert any("greater than or equal to 1" in m for m in messages), messages
    assert not lake.has_data("generations")


def test_environment_reads_every_variable_in_one_place(monkeypatch):
    for variable in VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    assert environment().env == "local" and environment().warehouse is None
    monkeypatch.setenv("MALT_ENV", "test")
    monkeypatch.setenv("MALT_MODEL", "")  # empty counts as unset
    monkeypatch.setenv("MALT_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MALT_API_KEY", "secret")
    monkeypatch.setenv("MALT_LOG_LEVEL", "info")
    monkeypatch.setenv("MALT_FAKE_DELAY_S", "0.25")
    chosen = environment()
    assert (chosen.env, chosen.model, chosen.log_level) == ("test", None, "INFO")
    backend = resources_for_env()["backend"]
    assert (backend.kind, backend.model, backend.base_url, backend.fake_delay_s) \
        == ("fake", "fake", "http://127.0.0.1:9/v1", 0.25)
    # the key reaches the engine of a run; the resource definition holds only the variable
    monkeypatch.setenv("MALT_BACKEND", "openai")
    seen = {}

    @dg.asset
    def probe(backend: BackendResource) -> None:
        seen["key"] = backend.engine().api_key

    result = dg.materialize([probe], resources={"backend": resources_for_env()["backend"]})
    assert result.success and seen["key"] == "secret"
    assert backend.model_dump().get("api_key") != "secret"  # the definition holds the name


@pytest.mark.parametrize(("variable", "value"), [
    ("MALT_ENV", "prod"), ("MALT_BACKEND", "tgi"), ("MALT_FAKE_DELAY_S", "-1"),
    ("MALT_DUCKDB_MEMORY_LIMIT", "lots"), ("MALT_LOG_LEVEL", "chatty")])
def test_a_bad_variable_is_a_clear_error_naming_it(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"{variable}={value!r}"):
        environment()


def test_the_cli_reports_a_bad_variable_in_one_line(warehouse, monkeypatch):
    monkeypatch.setenv("MALT_DUCKDB_MEMORY_LIMIT", "lots")
    proc = subprocess.run([sys.executable, "-m", "assets.cli", "sql", "select 1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "MALT_DUCKDB_MEMORY_LIMIT='lots'" in proc.stderr
    assert "Traceback" not in proc.stderr
