"""Resources, chosen by environment (``MALT_ENV``: local | test | gpu)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from malt_lake.backends import Backend, BackendSettings, build_backend
from malt_lake.errors import ConfigError
from malt_lake.lake import Lake
from malt_lake.settings import ProjectSettings, load_settings, warehouse_root
from malt_lake.training.config import Recipe, load_recipe


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


class BackendResource(dg.ConfigurableResource):
    """The model that expands trees and evaluates: one engine per run, created on first use
    and shared by every asset of the run (G, V and R load the model once), released when the
    run ends or when a training step needs the memory (``release``)."""

    kind: str = Field(default="transformers", description="transformers | vllm | openai | fake")
    model: str = Field(default="embedded", description="'embedded', a model dir or hub id")
    dtype: str = Field(default="bfloat16", description="transformers dtype")
    max_batch_rows: int = Field(default=192, description="transformers: rows decoded together")
    base_url: str | None = Field(default=None, description="openai: server URL (…/v1)")
    fake_delay_s: float = Field(default=0.0, description="fake backend: seconds per batch")

    def settings(self) -> BackendSettings:
        return BackendSettings(kind=self.kind, model=self.model, dtype=self.dtype,
                               max_batch_rows=self.max_batch_rows, base_url=self.base_url,
                               fake_delay_s=self.fake_delay_s)

    _engine: Backend | None = PrivateAttr(default=None)

    def build(self) -> Backend:
        """A new engine (callers that hold it close it); assets use ``engine()``."""
        return build_backend(self.settings())

    def engine(self) -> Backend:
        """The run's engine, built on first use."""
        if self._engine is None:
            self._engine = self.build()
        return self._engine

    def release(self) -> None:
        """Close the run's engine and give its memory back (GPU memory included) before a
        step that needs it, such as training in the same process; the next ``engine()``
        builds a new one."""
        if self._engine is None:
            return
        engine, self._engine = self._engine, None
        engine.close()
        del engine
        import gc

        gc.collect()
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.empty_cache()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.release()

    def check_base_model(self, base_model: str) -> None:
        """Adapters only work on the model they were trained on: the recipe's base must be
        the model this backend serves (the fake test backend serves none, so anything goes)."""
        if self.kind == "fake":
            return
        from malt_lake.backends.transformers_backend import resolve_model

        trained_on, served = resolve_model(base_model)[0], resolve_model(self.model)[0]
        if trained_on != served:
            raise ConfigError(
                f"the training recipe's base model is {trained_on!r} but the backend serves "
                f"{served!r}; adapters must match the served model. Pick a recipe for it "
                "(MALT_RECIPE) or set MALT_MODEL to the recipe's base model")


class TrainingResource(dg.ConfigurableResource):
    """How adapters are trained: a recipe file (see malt_lake/training/recipes/)."""

    recipe_name: str = Field(default="cpu-smollm2", description="Recipe name or TOML path.")

    def recipe(self, override: str | None = None, max_steps: int | None = None) -> Recipe:
        recipe = load_recipe(override or self.recipe_name)
        return recipe.with_stages(max_steps=max_steps) if max_steps else recipe


# MALT_ENV picks the backend; MALT_BACKEND / MALT_MODEL / MALT_BASE_URL override it.
ENV_BACKENDS = {
    "local": {"kind": "transformers", "model": "embedded"},
    "test": {"kind": "fake", "model": "fake"},
    "gpu": {"kind": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct"},
}
# MALT_ENV also picks the training recipe; MALT_RECIPE overrides it.
ENV_RECIPES = {"local": "cpu-smollm2", "test": "cpu-smollm2", "gpu": "gpu-qwen2.5-1.5b"}


def resources_for_env(env: str | None = None,
                      warehouse: Path | None = None) -> dict[str, dg.ConfigurableResource]:
    env = env or os.environ.get("MALT_ENV", "local")
    if env not in ENV_BACKENDS:
        raise ValueError(f"MALT_ENV={env!r}: expected one of {sorted(ENV_BACKENDS)}")
    backend = dict(ENV_BACKENDS[env])
    for field, variable in [("kind", "MALT_BACKEND"), ("model", "MALT_MODEL"),
                            ("base_url", "MALT_BASE_URL")]:
        if os.environ.get(variable):
            backend[field] = os.environ[variable]
    if os.environ.get("MALT_FAKE_DELAY_S"):
        backend["fake_delay_s"] = float(os.environ["MALT_FAKE_DELAY_S"])
    return {
        "lake": LakeResource(warehouse=str(warehouse or warehouse_root())),
        "project": ProjectResource(config_file=os.environ.get("MALT_CONFIG")),
        "backend": BackendResource(**backend),
        "training": TrainingResource(
            recipe_name=os.environ.get("MALT_RECIPE") or ENV_RECIPES[env]),
    }
