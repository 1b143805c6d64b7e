"""Resources, chosen by environment (``MALT_ENV``: local | test | gpu)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from malt_lake.lake import Lake
from malt_lake.settings import ProjectSettings, load_settings, warehouse_root


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives."""

    warehouse: str = Field(description="Warehouse root directory (MALT_WAREHOUSE).")

    def lake(self) -> Lake:
        return Lake(self.warehouse)


class ProjectResource(dg.ConfigurableResource):
    """Which datasets feed the lake."""

    config_file: str | None = Field(
        default=None, description="TOML project config (MALT_CONFIG); None = built-in demo."
    )

    def settings(self) -> ProjectSettings:
        return load_settings(self.config_file)


def resources_for_env(env: str | None = None) -> dict[str, dg.ConfigurableResource]:
    env = env or os.environ.get("MALT_ENV", "local")
    if env not in {"local", "test", "gpu"}:
        raise ValueError(f"MALT_ENV={env!r}: expected local, test or gpu")
    return {
        "lake": LakeResource(warehouse=str(warehouse_root())),
        "project": ProjectResource(config_file=os.environ.get("MALT_CONFIG")),
    }
