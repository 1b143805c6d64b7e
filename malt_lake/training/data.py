"""Role datasets from the lake, as the Hugging Face datasets TRL trains on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from malt_lake.lake import Lake
from malt_lake.query import fetch


@dataclass(frozen=True)
class RoleExamples:
    """One stage's rows: the table TRL sees plus what the manifest records about it."""

    table: pa.Table       # prompt/completion (SFT) or prompt/chosen/rejected (DPO)
    thetas: list[float]   # distinct θ the rows were labelled with
    partitions: list[str]
    fingerprint: str      # hash of the row ids: same rows, same fingerprint

    @property
    def n_rows(self) -> int:
        return self.table.num_rows

    def to_dataset(self):
        from datasets import Dataset

        return Dataset(self.table)


def sft_examples(lake: Lake, role: str, split: str = "train") -> RoleExamples:
    return _examples(lake, "training/sft_examples", role, split,
                     ["prompt", "completion"], ["node_id"])


def dpo_examples(lake: Lake, role: str, split: str = "train") -> RoleExamples:
    return _examples(lake, "training/dpo_examples", role, split,
                     ["prompt", "chosen", "rejected"], ["pos_id", "neg_id"])


def _examples(lake: Lake, sql: str, role: str, split: str, keep: list[str],
              ids: list[str]) -> RoleExamples:
    rows = fetch(lake, sql, {"role": role, "split": split})
    digest = hashlib.sha256()
    for values in zip(*(rows.column(c).to_pylist() for c in ["theta", *ids]), strict=True):
        digest.update(repr(values).encode())
    keys = sorted({f"{d}.{s}" for d, s in zip(rows.column("dataset").to_pylist(),
                                               rows.column("shard").to_pylist(), strict=True)})
    return RoleExamples(
        table=rows.select(keep),
        thetas=sorted(set(rows.column("theta").to_pylist())),
        partitions=keys,
        fingerprint=digest.hexdigest()[:16],
    )
