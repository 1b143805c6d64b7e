"""Train one role's adapter from the lake: SFT, then DPO where the recipe says so.

The generator trains with SFT on its positives; the verifier and refiner train with SFT and
then DPO on sibling pairs, the SFT adapter being DPO's reference. A stage with too few rows
is skipped with a reason, never trained on noise; a role whose SFT stage is skipped gets no
adapter (evaluation then runs that role on the base model and says so).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from malt_lake.errors import MaltLakeError
from malt_lake.lake import Lake
from malt_lake.training.config import Recipe, StageSettings
from malt_lake.training.data import (
    RoleExamples,
    dpo_examples,
    sft_examples,
    within_max_length,
)
from malt_lake.training.store import SFT_STAGE, AdapterStore, write_manifest
from malt_lake.training.trainer import Log, StageResult

LOSS_PLOT = "loss.png"


@dataclass
class RoleTraining:
    """What happened to one role: trained, reused an identical version, or skipped."""

    role: str
    status: str                  # "trained" | "reused" | "skipped"
    reason: str = ""
    directory: Path | None = None
    version: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def train_role(lake: Lake, role: str, recipe: Recipe, *, dataset: str,
               pooled: Sequence[str] | None = None, split: str = "train", force: bool = False,
               log: Log = print) -> RoleTraining:
    """Train ``dataset``'s adapter for ``role`` on that dataset's role data (the paper trains
    one adapter set per benchmark), or on the rows of every dataset in ``pooled``."""
    from malt_lake.backends.transformers_backend import resolve_model
    from malt_lake.lake import partition_lock

    role_recipe = recipe.role(role)
    store = AdapterStore(lake, dataset)
    sources = sorted(set(pooled)) if pooled else [dataset]
    sft_rows = sft_examples(lake, role, split, sources)
    if sft_rows.n_rows < role_recipe.sft.min_rows:
        return RoleTraining(role, "skipped", (
            f"sft_{role} has {sft_rows.n_rows} rows in split {split!r} of "
            f"{', '.join(sources)} (the recipe needs {role_recipe.sft.min_rows}); materialize "
            f"more partitions of the tree, or lower roles.{role}.sft.min_rows"))
    dpo_rows = dpo_examples(lake, role, split, sources) if role_recipe.dpo else None
    model_id, source = resolve_model(recipe.base_model)
    version = _version(model_id, recipe, role, sft_rows, dpo_rows)
    with partition_lock(lake, f"adapter_{dataset}_{role}"):
        if store.has(role, version) and not force:
            directory = store.publish(role, version)
            log(f"{role}: adapter {version} already trained on these rows; reusing it")
            return RoleTraining(role, "reused", "same base model, recipe and rows",
                                directory, version, store.manifest(directory))
        started = time.perf_counter()
        try:
            with store.building(role, version) as build:
                stages = _train_stages(source, recipe, role, sft_rows, dpo_rows, build, log)
                manifest = _manifest(model_id, recipe, role, version, split, sft_rows,
                                     dpo_rows, stages, time.perf_counter() - started)
                _plot(stages, build / LOSS_PLOT, role)
                write_manifest(build, manifest)
        except StageSkipped as skipped:  # too few rows fit max_length: no adapter, a reason
            log(f"{role}: {skipped}")
            return RoleTraining(role, "skipped", str(skipped))
        directory = store.publish(role, version)
    log(f"{role}: adapter {version} written to {directory}")
    return RoleTraining(role, "trained", "", directory, version, manifest)


class StageSkipped(MaltLakeError):
    """SFT has fewer rows within its max_length than min_rows: the role gets no adapter.
    Raised inside the adapter build, so nothing is written or published."""


def _train_stages(source, recipe: Recipe, role: str, sft_rows: RoleExamples,
                  dpo_rows: RoleExamples | None, build: Path, log: Log) -> dict[str, Any]:
    """SFT, then DPO on the same in-memory base (loaded once). Rows TRL would truncate are
    dropped before training and counted in each stage's result."""
    from malt_lake.training.trainer import load_base, load_tokenizer, train_sft

    role_recipe = recipe.role(role)
    tokenizer = load_tokenizer(source)
    sft_rows, sft_dropped = _fit(sft_rows, tokenizer, role_recipe.sft, f"sft_{role}", log)
    if sft_rows.n_rows < role_recipe.sft.min_rows:
        raise StageSkipped(_too_few(f"sft_{role}", "rows", sft_rows.n_rows, sft_dropped,
                                    role_recipe.sft, f"roles.{role}.sft"))
    dpo_dropped = 0
    if dpo_rows is not None and role_recipe.dpo is not None:
        dpo_rows, dpo_dropped = _fit(dpo_rows, tokenizer, role_recipe.dpo, f"dpo_{role}", log)
    model, tokenizer = load_base(source, recipe.dtype)
    log(f"{role}: SFT on {sft_rows.n_rows} positives")
    model, sft = train_sft(model, tokenizer, sft_rows.to_dataset(), role_recipe.sft,
                           recipe.lora, recipe.seed, build / "scratch", log,
                           bf16=recipe.bf16_compute,
                           gradient_checkpointing=recipe.gradient_checkpointing)
    stages: dict[str, Any] = {"sft": replace(sft, dropped_too_long=sft_dropped)}
    if role_recipe.dpo is None:
        model.save_pretrained(build)
    elif dpo_rows is None or dpo_rows.n_rows < role_recipe.dpo.min_rows:
        n = dpo_rows.n_rows if dpo_rows else 0
        reason = _too_few(f"dpo_{role}", "pairs", n, dpo_dropped, role_recipe.dpo,
                          f"roles.{role}.dpo")
        stages["dpo"] = f"skipped: {reason}; the adapter is the SFT one"
        log(f"{role}: {stages['dpo']}")
        model.save_pretrained(build)
    else:
        dpo = _dpo_on_sft(model, tokenizer, dpo_rows, recipe, role, build, log)
        stages["dpo"] = replace(dpo, dropped_too_long=dpo_dropped)
    shutil.rmtree(build / "scratch", ignore_errors=True)
    (build / "README.md").unlink(missing_ok=True)  # peft's model-card stub says nothing here
    return stages


def _fit(rows: RoleExamples, tokenizer, stage: StageSettings, table: str,
         log: Log) -> tuple[RoleExamples, int]:
    """The rows that fit the stage's max_length (TRL would cut the others), and how many
    did not."""
    kept, dropped = within_max_length(rows, tokenizer, stage.max_length)
    if dropped:
        log(f"{table}: dropped {dropped} of {rows.n_rows} rows longer than max_length "
            f"{stage.max_length} tokens (TRL would cut them)")
    return kept, dropped


def _too_few(table: str, unit: str, n: int, dropped: int, stage: StageSettings,
             key: str) -> str:
    if not dropped:
        return (f"{table} has {n} {unit} (the recipe needs {stage.min_rows}); materialize more "
                f"partitions of the tree, or lower {key}.min_rows")
    return (f"{table} has {n} {unit} within max_length {stage.max_length} tokens ({dropped} "
            f"longer ones dropped; the recipe needs {stage.min_rows}); raise {key}.max_length "
            f"or lower {key}.min_rows")


def _dpo_on_sft(model, tokenizer, dpo_rows: RoleExamples, recipe: Recipe, role: str,
                build: Path, log: Log) -> StageResult:
    """DPO whose policy starts from, and whose reference is, the SFT adapter, on the SFT
    model's own base: the SFT adapter is saved, its LoRA layers are taken out (unloaded, not
    merged: the base weights stay as loaded) and it is loaded back as the trainable policy,
    which TRL copies into a frozen "ref" adapter. One base model in memory, not two."""
    from peft import PeftModel

    from malt_lake.training.trainer import train_dpo

    sft_dir = build / SFT_STAGE
    model.save_pretrained(sft_dir)
    policy = PeftModel.from_pretrained(_bare_base(model), sft_dir, is_trainable=True)
    log(f"{role}: DPO on {dpo_rows.n_rows} pairs (reference: the SFT adapter)")
    policy, dpo = train_dpo(policy, tokenizer, dpo_rows.to_dataset(), recipe.role(role).dpo,
                            recipe.seed, build / "scratch", log, bf16=recipe.bf16_compute,
                            gradient_checkpointing=recipe.gradient_checkpointing)
    policy.save_pretrained(build, selected_adapters=["default"])
    return dpo


def _bare_base(peft_model):
    """The base under ``peft_model`` with its LoRA layers removed (not merged) and without the
    fused-LM-head ``forward`` TRL's SFT trainer set on the instance: the model a fresh load
    would give, for the DPO trainer to wrap and patch again."""
    base = peft_model.unload()
    vars(base).pop("forward", None)
    return base


def _version(model_id: str, recipe: Recipe, role: str, sft_rows: RoleExamples,
             dpo_rows: RoleExamples | None) -> str:
    inputs = {"base_model": model_id, "role": role, "lora": recipe.as_dict()["lora"],
              "dtype": recipe.dtype, "autocast": recipe.autocast, "seed": recipe.seed,
              "gradient_checkpointing": recipe.gradient_checkpointing,
              "stages": json.loads(json.dumps(recipe.as_dict()["roles"][role], default=str)),
              "sft_rows": sft_rows.fingerprint,
              "dpo_rows": dpo_rows.fingerprint if dpo_rows else None}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"v-{digest[:12]}"


def _manifest(model_id: str, recipe: Recipe, role: str, version: str, split: str,
              sft_rows: RoleExamples, dpo_rows: RoleExamples | None,
              stages: dict[str, Any], wall_s: float) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    def data(rows: RoleExamples | None) -> dict[str, Any] | None:
        return None if rows is None else {"rows": rows.n_rows, "thetas": rows.thetas,
                                          "partitions": rows.partitions,
                                          "fingerprint": rows.fingerprint}

    return {
        "role": role, "version": version, "base_model": model_id, "recipe": recipe.as_dict(),
        "split": split, "theta": sorted({*sft_rows.thetas, *(dpo_rows.thetas if dpo_rows else [])}),
        "data": {"sft": data(sft_rows), "dpo": data(dpo_rows)},
        "stages": {k: (v.as_dict() if isinstance(v, StageResult) else v)
                   for k, v in stages.items()},
        "wall_time_s": round(wall_s, 2),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "trl": trl.__version__,
                     "python": platform.python_version()},
    }


def _plot(stages: dict[str, Any], path: Path, role: str) -> None:
    from malt_lake.plots import loss_curves

    curves = {k: v.loss_history for k, v in stages.items() if isinstance(v, StageResult)}
    loss_curves(curves, path, f"{role} adapter: training loss")
