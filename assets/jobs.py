"""Asset jobs: the named runs the CLI starts and the UI's launchpad offers, with the same run
config (each asset's config under ``ops``). Built from the asset groups, so a new asset in a
group joins its jobs."""

from __future__ import annotations

import dagster as dg

expansion = dg.define_asset_job(
    "expansion", selection=dg.AssetSelection.groups("expand"),
    description="Generator answers, verifier critiques and refiner answers of a shard (the "
                "tree's samples; the only assets that call a model).")
tree = dg.define_asset_job(
    "tree", selection=dg.AssetSelection.groups("expand", "credit", "role_datasets"),
    description="Everything of a shard after its questions: expansion, rewards, credit and the "
                "role datasets.")
relabel = dg.define_asset_job(
    "relabel", selection=dg.AssetSelection.assets("credit")
    | dg.AssetSelection.groups("role_datasets"),
    description="Credit at a new theta and the role datasets from it; reads the stored "
                "rewards, never calls a model (the CLI also takes `cheap` for it).")
role_datasets = dg.define_asset_job(
    "role_datasets", selection=dg.AssetSelection.groups("role_datasets"),
    description="SFT and DPO datasets of every role from a shard's credit.")
adapters = dg.define_asset_job(
    "adapters", selection=dg.AssetSelection.groups("train"),
    description="The generator, verifier and refiner LoRA adapters of a dataset.")
evaluate = dg.define_asset_job(
    "evaluate", selection=dg.AssetSelection.groups("evaluate"),
    description="SA, MA and MALT (with majority votes) on a dataset's held-out split.")

JOBS = [expansion, tree, relabel, role_datasets, adapters, evaluate]
# earlier CLI spellings of a job
SPELLINGS = {"cheap": "relabel"}
