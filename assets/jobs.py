"""Asset jobs: the named runs the CLI starts and the UI's launchpad offers, with the same run
config (each asset's config under ``ops``). Built from the asset groups, so a new asset in a
group joins its jobs; round i >= 2 has the same jobs over its own groups (``round_2_tree``)."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from assets import rounds

Selection = Callable[[int], dg.AssetSelection]


def _groups(*names: str) -> Selection:
    return lambda index: dg.AssetSelection.groups(*(rounds.in_round(n, index) for n in names))


def _credit_and_role_datasets(index: int) -> dg.AssetSelection:
    return (dg.AssetSelection.assets(rounds.asset_key("credit", index))
            | _groups("role_datasets")(index))


# name -> (selection in a round, description)
JOB_SPECS: dict[str, tuple[Selection, str]] = {
    "expansion": (_groups("expand"),
                  "Generator answers, verifier critiques and refiner answers of a shard (the "
                  "tree's samples; the only assets that call a model)."),
    "tree": (_groups("expand", "credit", "role_datasets"),
             "Everything of a shard after its questions: expansion, rewards, credit and the "
             "role datasets."),
    "relabel": (_credit_and_role_datasets,
                "Credit at a new theta and the role datasets from it; reads the stored "
                "rewards, never calls a model (the CLI also takes `cheap` for it)."),
    "role_datasets": (_groups("role_datasets"),
                      "SFT and DPO datasets of every role from a shard's credit."),
    "adapters": (_groups("train"),
                 "The generator, verifier and refiner LoRA adapters of a dataset."),
    "evaluate": (_groups("evaluate"),
                 "SA, MA and MALT (with majority votes) on a dataset's held-out split."),
}
# earlier CLI spellings of a job
SPELLINGS = {"cheap": "relabel"}


def jobs_of_round(index: int) -> list[dg.UnresolvedAssetJobDefinition]:
    """The named jobs of round ``index``."""
    where = ("" if index == 1 else
             f" Round {index}: its own lake, trees expanded with round {index - 1}'s adapters.")
    return [dg.define_asset_job(rounds.in_round(name, index), selection=selection(index),
                                description=description + where)
            for name, (selection, description) in JOB_SPECS.items()]


def all_jobs(defined_rounds: int) -> list[dg.UnresolvedAssetJobDefinition]:
    """Every round's jobs, round 1 first."""
    return [job for index in range(1, defined_rounds + 1) for job in jobs_of_round(index)]
