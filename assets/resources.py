"""Resources, chosen by environment (``MALT_ENV``: local | test | gpu)."""

from __future__ import annotations

import sys

import dagster as dg
from pydantic import Field, PrivateAttr

from assets.concurrency import WAREHOUSE_TAG
from assets.rounds import round_of
from malt_lake.backends import Backend, BackendSettings, build_backend
from malt_lake.environment import environment
from malt_lake.errors import ConfigError
from malt_lake.lake import Lake
from malt_lake.settings import ProjectSettings, load_settings, round_warehouse, warehouse_root
from malt_lake.storage import normalize
from malt_lake.training.config import Recipe, load_recipe


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives."""

    warehouse: str = Field(description="Warehouse root: a directory or s3://bucket/prefix "
                           "(MALT_WAREHOUSE).")

    def lake(self, round_index: int = 1) -> Lake:
        """Round ``round_index``'s lake (round 1: the warehouse itself)."""
        return Lake(round_warehouse(self.warehouse, round_index))

    def lake_for(self, context: dg.AssetExecutionContext) -> Lake:
        """The lake of the round whose asset is running (``assets.rounds``). A run that was
        submitted for another warehouse (a CLI backfill run by a daemon started with other
        settings) is refused before it writes anything."""
        wanted = context.run.tags.get(WAREHOUSE_TAG)
        if wanted is not None and normalize(wanted) != normalize(self.warehouse):
            raise ConfigError(f"this run was submitted for the warehouse {wanted}, but the "
                              f"code location running it writes {self.warehouse}; run the "
                              f"daemon (`malt-lake ui`) with MALT_WAREHOUSE={wanted}")
        return self.lake(round_of(context))


class ProjectResource(dg.ConfigurableResource):
    """Which datasets feed the lake."""

    config_file: str | None = Field(
        default=None, description="TOML project config (MALT_CONFIG); None = built-in demo."
    )

    def settings(self) -> ProjectSettings:
        return load_settings(self.config_file)


class BackendResource(dg.ConfigurableResource, BackendSettings):
    """The model that expands trees and evaluates: the library's ``BackendSettings``
    (fields, defaults and bounds) as a resource. One engine per run, created on first use
    and shared by every asset of the run (G, V and R load the model once), released when the
    run ends or when a training step needs the memory (``release``)."""

    _engine: Backend | None = PrivateAttr(default=None)

    def build(self) -> Backend:
        """A new engine (callers that hold it close it); assets use ``engine()``."""
        return build_backend(self)

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


# MALT_ENV picks the backend; MALT_BACKEND / MALT_MODEL / MALT_BASE_URL / MALT_API_KEY /
# MALT_FAKE_DELAY_S override it.
ENV_BACKENDS = {
    "local": {"kind": "transformers", "model": "embedded"},
    "test": {"kind": "fake", "model": "fake"},
    "gpu": {"kind": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct"},
}
# MALT_ENV also picks the training recipe; MALT_RECIPE overrides it.
ENV_RECIPES = {"local": "cpu-smollm2", "test": "cpu-smollm2", "gpu": "gpu-qwen2.5-1.5b"}


def resources_for_env(env: str | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of ``env`` (else ``MALT_ENV``) with the environment's overrides."""
    chosen = environment()
    env = env or chosen.env
    if env not in ENV_BACKENDS:
        raise ValueError(f"MALT_ENV={env!r}: expected one of {sorted(ENV_BACKENDS)}")
    overrides = {"kind": chosen.backend, "model": chosen.model, "base_url": chosen.base_url,
                 "fake_delay_s": chosen.fake_delay_s,
                 # resolved when a run starts, so the UI shows the variable, not the secret
                 "api_key": dg.EnvVar("MALT_API_KEY") if chosen.api_key else None}
    backend = {**ENV_BACKENDS[env],
               **{field: value for field, value in overrides.items() if value is not None}}
    return {
        "lake": LakeResource(warehouse=str(warehouse_root())),
        "project": ProjectResource(config_file=chosen.config),
        "backend": BackendResource(**backend),
        "training": TrainingResource(recipe_name=chosen.recipe or ENV_RECIPES[env]),
    }
