"""Typed training settings and the recipe files that fill them.

A recipe is one TOML file (``recipes/*.toml``) naming the base model and the LoRA, SFT and
DPO settings every role trains with; a role section may override any stage setting.
Dataclasses with ``help`` metadata, as TRL's own configs, so ``--help`` and docs come from
one place.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from malt_lake.errors import ConfigError
from malt_lake.names import ROLES

AUTOCAST = ("none", "bf16")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoraSettings:
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Linear layers that get adapters."})

    def __post_init__(self) -> None:
        _positive(self, "r", "alpha")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


@dataclass(frozen=True)
class StageSettings:
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    epochs: float = field(default=1.0,
                          metadata={"help": "Passes over the data (if max_steps < 1)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps; "
                                                 "-1 = use epochs."})
    batch_size: int = field(default=4, metadata={"help": "Examples per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(default=512, metadata={"help": "Tokens per example (prompt + "
                                                   "completion); longer ones are dropped, counted "
                                                   "in the manifest, never cut."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of steps warming up."})
    beta: float = field(default=0.2, metadata={"help": "DPO: KL strength (paper: 0.2). "
                                               "Ignored by SFT."})
    min_rows: int = field(default=4, metadata={"help": "Fewer rows than this: skip the stage "
                                               "with a message instead of training on noise."})

    def __post_init__(self) -> None:
        _positive(self, "learning_rate", "epochs", "batch_size", "grad_accum", "max_length",
                  "beta", "min_rows")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 (use epochs) or >= 1, got {self.max_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class RoleRecipe:
    sft: StageSettings
    dpo: StageSettings | None  # None: SFT only (the generator, in the paper)


@dataclass(frozen=True)
class Recipe:
    name: str = field(metadata={"help": "Recipe name (the file's stem)."})
    base_model: str = field(metadata={"help": "'embedded', a local model dir or a hub id."})
    dtype: str = field(default="float32", metadata={
        "help": "dtype of the frozen base model's weights. The LoRA weights and their optimizer "
                "state stay float32 either way (peft upcasts adapters of a bf16 base), so "
                "bfloat16 loses no small updates and skips a cast of every base weight in "
                "every op."})
    autocast: str = field(default="none", metadata={
        "help": "Mixed precision for training compute: 'bf16' runs forward and backward under "
                "bf16 autocast while weights and optimizer state stay in `dtype` (about 1.4x "
                "faster on this project's CPUs, and TRL's own default); 'none' computes in "
                "`dtype`. bfloat16 weights always compute in bf16."})
    gradient_checkpointing: bool = field(default=True, metadata={
        "help": "Recompute activations in the backward pass instead of keeping them (TRL's "
                "default): it saves memory on a large model and costs a forward pass; off "
                "where memory allows."})
    seed: int = field(default=0, metadata={"help": "Seed for data order and LoRA init."})
    lora: LoraSettings = field(default_factory=LoraSettings)
    roles: dict[str, RoleRecipe] = field(default_factory=dict)
    description: str = field(default="", metadata={"help": "What this recipe is for."})

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCAST:
            raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST)}, "
                              f"got {self.autocast!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def bf16_compute(self) -> bool:
        return self.autocast == "bf16" or self.dtype == "bfloat16"

    def role(self, role: str) -> RoleRecipe:
        if role not in self.roles:
            raise ConfigError(f"recipe {self.name!r} has no settings for role {role!r}")
        return self.roles[role]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_stages(self, **changes: Any) -> Recipe:
        """The same recipe with ``changes`` (e.g. ``max_steps=2``) applied to every stage."""
        if not changes:
            return self
        roles = {
            name: RoleRecipe(sft=dataclasses.replace(r.sft, **changes),
                             dpo=dataclasses.replace(r.dpo, **changes) if r.dpo else None)
            for name, r in self.roles.items()
        }
        return dataclasses.replace(self, roles=roles)


def recipe_dir() -> Path:
    return Path(str(resources.files("malt_lake.training") / "recipes"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (``cpu-smollm2``) or by path to a TOML file."""
    builtin = recipe_dir() / f"{name_or_path}.toml"
    path = builtin if builtin.is_file() else Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no training recipe {name_or_path!r}; built-in recipes: "
                          f"{', '.join(recipe_names())}, or give a path to a .toml file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from exc
    try:
        return _recipe_from(raw, path.stem)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"recipe {path} is invalid: {exc}") from exc


def _recipe_from(raw: dict[str, Any], name: str) -> Recipe:
    raw = dict(raw)
    lora = LoraSettings(**_known(LoraSettings, raw.pop("lora", {}), "lora"))
    lora = dataclasses.replace(lora, target_modules=tuple(lora.target_modules))
    sft_defaults = _known(StageSettings, raw.pop("sft", {}), "sft")
    dpo_defaults = _known(StageSettings, raw.pop("dpo", {}), "dpo")
    role_sections = raw.pop("roles", {})
    unknown_roles = sorted(set(role_sections) - set(ROLES))
    if unknown_roles:
        raise ValueError(f"unknown roles {unknown_roles}; roles are {', '.join(ROLES)}")
    roles = {}
    for role in ROLES:
        section = dict(role_sections.get(role, {}))
        stages = section.pop("stages", ["sft"] if role == "generator" else ["sft", "dpo"])
        if stages not in (["sft"], ["sft", "dpo"]):
            raise ValueError(f"roles.{role}.stages must be ['sft'] or ['sft', 'dpo']")
        sft = StageSettings(**{**sft_defaults, **_known(StageSettings, section.pop("sft", {}),
                                                         f"roles.{role}.sft")})
        dpo = StageSettings(**{**dpo_defaults, **_known(StageSettings, section.pop("dpo", {}),
                                                         f"roles.{role}.dpo")})
        if section:
            raise ValueError(f"unknown keys in roles.{role}: {sorted(section)}")
        roles[role] = RoleRecipe(sft=sft, dpo=dpo if "dpo" in stages else None)
    top = _known(Recipe, raw, "recipe")
    if "base_model" not in top:
        raise ValueError("base_model is required")
    return Recipe(name=name, lora=lora, roles=roles, **top)


def _known(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - {"name", "lora", "roles"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown keys in [{where}]: {unknown}; known: {sorted(names)}")
    return dict(values)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
