"""The resource set asset tests materialize with: a temp lake, the fake backend by default."""

from __future__ import annotations

from pathlib import Path

from assets.resources import BackendResource, LakeResource, ProjectResource, TrainingResource
from malt_lake.lake import Lake


def asset_resources(lake: Lake, *, config: Path | None = None,
                    backend: BackendResource | None = None,
                    recipe: Path | None = None) -> dict:
    return {"lake": LakeResource(warehouse=str(lake.location)),
            "project": ProjectResource(config_file=str(config) if config else None),
            "backend": backend or BackendResource(kind="fake", model="fake"),
            "training": TrainingResource(recipe_name=str(recipe)) if recipe
            else TrainingResource()}
