"""Token budgets per dataset family: sized for real solutions, consistent with what training
and the vLLM engine can hold, and what expansion actually uses."""

from __future__ import annotations

import inspect

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS
from malt_lake.backends.vllm_backend import VLLMBackend
from malt_lake.budgets import FAMILY_BUDGETS, TokenBudgets
from malt_lake.query import run_read_only
from malt_lake.settings import load_settings
from malt_lake.training.config import load_recipe, recipe_names
from tests.resources import asset_resources

RECIPES = sorted(recipe_names())


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_recipes_hold_the_longest_context_of_every_family(recipe_name):
    recipe = load_recipe(recipe_name)
    longest = max(b.context_tokens() for b in FAMILY_BUDGETS.values())
    for role in ("generator", "verifier", "refiner"):
        stages = recipe.role(role)
        for stage in filter(None, (stages.sft, stages.dpo)):
            assert stage.max_length >= longest, (role, stage.max_length, longest)


def test_the_vllm_engine_holds_the_longest_context():
    default = inspect.signature(VLLMBackend.__init__).parameters["max_model_len"].default
    assert default >= max(b.context_tokens() for b in FAMILY_BUDGETS.values())


def test_budgets_come_from_the_family_unless_the_dataset_sets_them(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[[datasets]]\nname = "m"\nfamily = "math"\n'
        '[datasets.splits.train]\nkind = "arithmetic"\ncount = 2\n'
        '[[datasets]]\nname = "g"\nfamily = "numeric"\n'
        '[datasets.max_tokens]\ngenerator = 300\nverifier = 200\nrefiner = 100\n'
        '[datasets.splits.train]\nkind = "arithmetic"\ncount = 2\n')
    settings = load_settings(config)
    assert settings.dataset("m").budgets() == FAMILY_BUDGETS["math"]
    assert settings.dataset("g").budgets() == TokenBudgets(generator=300, verifier=200,
                                                           refiner=100)
    assert FAMILY_BUDGETS["math"].generator >= 1024  # MATH solutions are long


def test_expansion_samples_with_the_role_budget_of_the_dataset(lake, instance, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[[datasets]]\nname = "arith"\nfamily = "numeric"\nshard_size = 2\n'
        '[datasets.max_tokens]\ngenerator = 40\nverifier = 30\nrefiner = 20\n'
        '[datasets.splits.train]\nkind = "arithmetic"\ncount = 2\n')
    resources = asset_resources(lake, config=config)
    assert dg.materialize(ALL_ASSETS, selection=["dataset_catalog"], instance=instance,
                          resources=resources).success
    assert dg.materialize(ALL_ASSETS, selection=["questions", "generations", "critiques",
                                                 "refinements"], partition_key="arith.train.0000",
                          instance=instance, resources=resources).success
    used = {r["role"]: r["m"] for r in run_read_only(lake, """
        select 'generator' role, max(max_tokens) m from generations
        union all select 'verifier', max(max_tokens) from critiques
        union all select 'refiner', max(max_tokens) from refinements""").to_pylist()}
    assert used == {"generator": 40, "verifier": 30, "refiner": 20}
