"""Names that become paths or keys: validated so nothing can escape the warehouse.

A partition key is ``<dataset>.<split>.<index:04d>`` (e.g. ``gsm8k.train.0003``); on disk it
is the hive path ``dataset=<dataset>/shard=<split>.<index:04d>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from malt_lake.errors import LakeError

# MALT's three roles, in chain order: generator answers, verifier critiques, refiner finalizes.
ROLES = ("generator", "verifier", "refiner")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHARD_RE = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})\.(\d{4,6})$")


def check_name(value: str, what: str) -> str:
    """Dataset, split and table names: lowercase, digits, '_' and '-', no dots or slashes."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise LakeError(
            f"invalid {what} {value!r}: use 1-64 of [a-z0-9_-], starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, order=True)
class PartitionKey:
    """One (dataset, shard) partition; the unit of retry."""

    dataset: str
    split: str
    index: int

    @property
    def shard(self) -> str:
        return f"{self.split}.{self.index:04d}"

    @property
    def key(self) -> str:
        return f"{self.dataset}.{self.shard}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def parse(cls, key: str) -> PartitionKey:
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) != 3 or not parts[2].isdigit():
            raise LakeError(
                f"invalid partition key {key!r}: expected <dataset>.<split>.<NNNN>, "
                "e.g. arith.train.0000 (list them with `malt-lake partitions`)"
            )
        dataset, split, index = parts
        return cls(check_name(dataset, "dataset"), check_name(split, "split"), int(index))

    @classmethod
    def from_columns(cls, dataset: str, shard: str) -> PartitionKey:
        match = SHARD_RE.match(shard) if isinstance(shard, str) else None
        if not match:
            raise LakeError(f"invalid shard {shard!r}: expected <split>.<NNNN>")
        return cls(check_name(dataset, "dataset"), match.group(1), int(match.group(2)))


def generation_id(question_id: str, g_idx: int) -> str:
    return f"{question_id}/g{g_idx}"


def critique_id(g_id: str, v_idx: int) -> str:
    return f"{g_id}/v{v_idx}"


def refinement_id(v_id: str, r_idx: int) -> str:
    return f"{v_id}/r{r_idx}"
