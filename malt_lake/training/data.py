"""Role datasets from the lake, as the Hugging Face datasets TRL trains on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

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


def sft_examples(lake: Lake, role: str, split: str, datasets: Sequence[str]) -> RoleExamples:
    return _examples(lake, "training/sft_examples", role, split, datasets,
                     ["prompt", "completion"], ["node_id"])


def dpo_examples(lake: Lake, role: str, split: str, datasets: Sequence[str]) -> RoleExamples:
    return _examples(lake, "training/dpo_examples", role, split, datasets,
                     ["prompt", "chosen", "rejected"], ["pos_id", "neg_id"])


def _examples(lake: Lake, sql: str, role: str, split: str, datasets: Sequence[str],
              keep: list[str], ids: list[str]) -> RoleExamples:
    rows = fetch(lake, sql, {"role": role, "split": split, "datasets": list(datasets)})
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


ANSWERS = ("completion", "chosen", "rejected")


def within_max_length(rows: RoleExamples, tokenizer,
                      max_length: int) -> tuple[RoleExamples, int]:
    """``rows`` without those TRL would cut at ``max_length`` tokens, and how many those were:
    a cut completion teaches the model to stop mid-answer (SFT), a cut pair compares answers
    nobody gave (DPO). TRL truncates silently; we drop and count instead."""
    lengths = sequence_lengths(rows.table, tokenizer)
    keep = pa.array([n <= max_length for n in lengths], type=pa.bool_())
    kept = rows.table.filter(keep)
    return replace(rows, table=kept), rows.n_rows - kept.num_rows


def sequence_lengths(table: pa.Table, tokenizer) -> list[int]:
    """Per row, the longest sequence TRL trains on: prompt + completion (SFT), or the longer of
    prompt + chosen and prompt + rejected (DPO), tokenized as TRL's trainers tokenize them."""
    prompts = table.column("prompt").to_pylist()
    longest = [0] * len(prompts)
    for column in (c for c in ANSWERS if c in table.column_names):
        answers = table.column(column).to_pylist()
        for i, n in enumerate(_token_counts(tokenizer, prompts, answers)):
            longest[i] = max(longest[i], n)
    return longest


def _token_counts(tokenizer, prompts: list, answers: list) -> list[int]:
    if not prompts:
        return []
    if isinstance(prompts[0], list):  # conversational (the lake's role tables): chat template
        ids = tokenizer.apply_chat_template([p + a for p, a in zip(prompts, answers, strict=True)],
                                            tokenize=True, return_dict=True)["input_ids"]
        return [len(row) for row in ids]
    eos = tokenizer.eos_token or ""  # plain text: TRL appends EOS to each answer first
    texts = [p + (a if a.endswith(eos) else a + eos) for p, a in zip(prompts, answers,
                                                                        strict=True)]
    return [len(row) for row in tokenizer(text=texts)["input_ids"]]
