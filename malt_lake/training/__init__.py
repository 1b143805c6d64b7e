"""Role training: LoRA SFT (all roles) then DPO (verifier, refiner) with TRL and peft."""

from malt_lake.training.config import (
    ROLES,
    LoraSettings,
    Recipe,
    RoleRecipe,
    StageSettings,
    load_recipe,
    recipe_names,
)

__all__ = ["ROLES", "LoraSettings", "Recipe", "RoleRecipe", "StageSettings", "load_recipe",
           "recipe_names"]
