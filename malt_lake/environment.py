"""The environment variables malt-lake reads, in one place, typed and bounded.

Everything else asks ``environment()`` instead of ``os.environ``, so a variable's name, type,
default and bounds are written once (the README's Settings table lists the same names). The
variables are read anew on each call: the CLI sets some of them (``MALT_WAREHOUSE``,
``MALT_CONFIG``) before it starts Dagster. An empty variable counts as unset.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from malt_lake.backends import BackendKind
from malt_lake.errors import ConfigError

EnvName = Literal["local", "test", "gpu"]


class Environment(BaseModel):
    """The process's settings from ``MALT_*`` variables (and ``DAGSTER_HOME``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: EnvName = Field("local", description="MALT_ENV: resource set (local transformers, "
                         "test fake backend, gpu vLLM).")
    config: str | None = Field(None, description="MALT_CONFIG: project TOML, or a built-in "
                               "project's name (demo, study); None = the demo.")
    warehouse: str | None = Field(None, description="MALT_WAREHOUSE: lake root, a directory "
                                  "or s3://bucket/prefix; None = the checkout's warehouse/ or "
                                  "./warehouse.")
    work_dir: str | None = Field(None, description="MALT_WORK_DIR: an s3:// warehouse's "
                                 "directory on this machine (Dagster instance, locks, adapter "
                                 "copies); None = one under ~/.cache/malt-lake.")
    aws_endpoint_url: str | None = Field(None, description="AWS_ENDPOINT_URL: an "
                                         "S3-compatible store's URL; None = AWS S3.")
    aws_region: str | None = Field(None, description="AWS_REGION: the bucket's region; "
                                   "None = us-east-1.")
    dagster_home: str | None = Field(None, description="DAGSTER_HOME: Dagster's storage; "
                                     "None = <warehouse>/dagster.")
    backend: BackendKind | None = Field(None, description="MALT_BACKEND: overrides the "
                                        "environment's backend kind.")
    model: str | None = Field(None, description="MALT_MODEL: overrides its model.")
    base_url: str | None = Field(None, description="MALT_BASE_URL: OpenAI-compatible server.")
    api_key: str | None = Field(None, description="MALT_API_KEY: that server's bearer token.")
    fake_delay_s: float | None = Field(None, ge=0, description="MALT_FAKE_DELAY_S: seconds "
                                       "per batch of the fake backend.")
    recipe: str | None = Field(None, description="MALT_RECIPE: training recipe name or TOML.")
    rounds: int = Field(2, ge=1, le=9, description="MALT_ROUNDS: MALT rounds the asset graph "
                        "holds (round i >= 2 expands with round i-1's adapters).")
    cache: str | None = Field(None, description="MALT_CACHE: the embedded model's copy.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "WARNING", description="MALT_LOG_LEVEL: Dagster console log level of CLI runs.")
    duckdb_memory_limit: str = Field("4GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
                                     description="MALT_DUCKDB_MEMORY_LIMIT: DuckDB memory per "
                                     "connection before it spills to disk.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


# field -> the variable it is read from (others' own names for DAGSTER_HOME and AWS_*)
VARIABLES = {name: (name.upper() if name == "dagster_home" or name.startswith("aws_")
                    else f"MALT_{name.upper()}")
             for name in Environment.model_fields}


def environment() -> Environment:
    """The settings the current ``os.environ`` holds; a bad value is a ConfigError that
    names its variable."""
    values = {field: os.environ[variable] for field, variable in VARIABLES.items()
              if os.environ.get(variable, "").strip()}
    try:
        return Environment(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{VARIABLES[str(error['loc'][0])]}={values.get(str(error['loc'][0]))!r}: "
            f"{error['msg']}" for error in exc.errors())
        raise ConfigError(f"bad environment variable: {problems}") from None
