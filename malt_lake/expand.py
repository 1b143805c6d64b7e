"""Tree expansion: one role's samples for one partition, resumable and never duplicated.

generator: n answers per question; verifier: n critiques per answer; refiner: n final
answers per critique. Completed batches are checkpointed under
``<warehouse>/checkpoints/<table>/dataset=../shard=../``; a killed run resumes from them (if
nothing that shapes the output changed: model, adapter, sampling, prompts, parents), and the
partition is written once, atomically, when every parent has its n children.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from malt_lake import schemas
from malt_lake.backends import (
    Backend,
    Completion,
    GenerationRequest,
    SamplingParams,
    request_seed,
)
from malt_lake.budgets import TokenBudgets, family_budgets
from malt_lake.errors import LakeError
from malt_lake.lake import Lake, Written
from malt_lake.lineage import node_fingerprint
from malt_lake.names import PartitionKey, critique_id, generation_id, refinement_id
from malt_lake.prompts import RoleTemplate, shared_stop, template
from malt_lake.rewards import checker_for

ROLE_TABLE = {"generator": "generations", "verifier": "critiques", "refiner": "refinements"}
PARENT_TABLE = {"generator": "questions", "verifier": "generations", "refiner": "critiques"}
VERDICT_RE = re.compile(r"verdict\s*[:：]\s*\**\s*(correct|incorrect)", re.IGNORECASE)


class RoleSettings(BaseModel):
    """Sampling for one role (the paper: n = 3, temperature 0.3)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(3, ge=1, le=64, description="Samples per parent (branching factor).")
    temperature: float = Field(0.3, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, le=32_768, description="Most new tokens per "
                                   "sample; None = the dataset's budget for this role.")
    seed: int = Field(0, description="Base seed; recorded on every row.")
    batch_prompts: int = Field(64, ge=1, description="Parents per checkpointed batch.")
    adapter: str | None = Field(None, description="LoRA adapter dir for this role; None = base.")

    def sampling(self) -> SamplingParams:
        if self.max_tokens is None:
            raise ValueError("max_tokens is unresolved; use with_budget() first")
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed)

    def with_budget(self, budgets: TokenBudgets, role: str) -> RoleSettings:
        """These settings with ``max_tokens`` set from the role's budget unless given."""
        if self.max_tokens is not None:
            return self
        return self.model_copy(update={"max_tokens": budgets.for_role(role)})


@dataclass(frozen=True)
class Parent:
    ids: dict[str, str]          # question_id [, g_id [, v_id]]
    request_id: str              # the parent's own id
    messages: list[dict]
    family: str
    choices: list[dict] | None
    fingerprint: str             # the parent row's content fingerprint (lineage)
    template: RoleTemplate       # the prompt's template (its stop patterns end the child)


def plan(lake: Lake, key: PartitionKey, role: str, prompts: str | None = None) -> list[Parent]:
    """The parents of one role in a partition, with the exact prompt each child will see,
    from the prompt set ``prompts`` (None: each question's family's own)."""
    questions = lake.read_required("questions", key)
    by_question = {q["question_id"]: q for q in questions.to_pylist()}
    if role == "generator":
        rows = [({"question_id": q["question_id"]}, q["question_id"], q, {}, q["fingerprint"])
                for q in by_question.values()]
    elif role == "verifier":
        rows = [({"question_id": g["question_id"], "g_id": g["g_id"]}, g["g_id"],
                 by_question[g["question_id"]], {"answer": g["text"]}, g["fingerprint"])
                for g in _live(lake.read_required("generations", key))]
    elif role == "refiner":
        answers = {g["g_id"]: g["text"] for g in lake.read_required("generations", key).to_pylist()}
        rows = [({"question_id": v["question_id"], "g_id": v["g_id"], "v_id": v["v_id"]},
                 v["v_id"], by_question[v["question_id"]],
                 {"answer": answers[v["g_id"]], "critique": v["text"]}, v["fingerprint"])
                for v in _live(lake.read_required("critiques", key))]
    else:
        raise ValueError(f"unknown role {role!r}")
    parents = []
    for ids, request_id, question, extra, parent_fingerprint in rows:
        tpl = template(prompts or question["family"], role)
        messages = tpl.render(question["question"], question["choices"], **extra)
        parents.append(Parent(ids, request_id, messages, question["family"],
                              question["choices"], parent_fingerprint, tpl))
    return sorted(parents, key=lambda p: p.request_id)


def _partition_budgets(lake: Lake, key: PartitionKey) -> TokenBudgets:
    """The family defaults of the partition's questions (callers with a dataset config pass
    resolved settings instead)."""
    families = set(lake.read_required("questions", key).column("family").to_pylist())
    return family_budgets(families.pop()) if len(families) == 1 else TokenBudgets.uniform(256)


def _live(table: pa.Table) -> list[dict]:
    """Rows that can have children: a failed sample (error) is a leaf by definition."""
    return [r for r in table.to_pylist() if r["error"] is None and r["text"] is not None]


class Expansion:
    """Runs one role over one partition with checkpoints."""

    def __init__(self, lake: Lake, key: PartitionKey, role: str, backend: Backend,
                 settings: RoleSettings, log: Callable[[str], None] | None = None,
                 show_progress: bool = True, prompts: str | None = None,
                 cut_loops: bool = False, write_id: str | None = None) -> None:
        self.lake, self.key, self.role = lake, key, role
        self.write_id = write_id
        self.written: Written | None = None  # the commit, once run() wrote the table
        self.prompts, self.cut_loops = prompts, cut_loops
        self.table = ROLE_TABLE[role]
        self.backend = backend
        self.settings = settings if settings.max_tokens is not None else \
            settings.with_budget(_partition_budgets(lake, key), role)
        self.log = log or (lambda message: None)
        self.show_progress = show_progress
        # under the warehouse, on its storage: a run on another machine resumes from them
        self.checkpoints = ("checkpoints", self.table, f"dataset={key.dataset}",
                            f"shard={key.shard}")

    def run(self) -> pa.Table:
        if self.write_id is not None:  # a retried step whose first attempt committed
            self.written = self.lake.committed_write(self.table, self.write_id)
            if self.written is not None:
                self.log(f"{self.table} {self.key}: committed by this run already "
                         f"(version {self.written.version}); not generated again")
                return self.lake.read_required(self.table, self.key)
        parents = plan(self.lake, self.key, self.role, self.prompts)
        done = self._resume(self._fingerprint(parents))
        todo = [p for p in parents if p.request_id not in done]
        n = self.settings.n
        if done:
            self.log(f"resuming {self.table} {self.key}: {len(done)} of {len(parents)} parents "
                     "already checkpointed")
        bar = tqdm(total=len(parents) * n, initial=len(done) * n, unit="gen",
                   desc=f"{self.role} {self.key}", disable=not self.show_progress)
        size = self.settings.batch_prompts
        params = replace(self.settings.sampling(), stop=shared_stop(p.template for p in parents),
                         cut_loops=self.cut_loops)
        self._watch_tokens(bar)
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            began = time.perf_counter()
            completions = self.backend.generate(
                [GenerationRequest(p.request_id, p.messages, self.settings.adapter,
                                   seed=self._seed(p)) for p in batch], params)
            tokens = sum(c.n_tokens for cs in completions for c in cs)
            rate = tokens / max(time.perf_counter() - began, 1e-9)
            self._checkpoint(self._rows(batch, completions))
            bar.update(len(batch) * n)
            bar.set_postfix(tok_s=f"{rate:.0f}")
            self.log(f"{self.table} {self.key}: {bar.n}/{bar.total} generations, "
                     f"{rate:.0f} tok/s")
        bar.close()
        if hasattr(self.backend, "on_step"):
            self.backend.on_step = None
        return self._finish(parents)

    def _watch_tokens(self, bar: tqdm) -> None:
        """Live tokens/s on the bar while a batch decodes, where the backend reports steps."""
        if not hasattr(self.backend, "on_step"):
            return
        began, count, shown = time.perf_counter(), [0], [0.0]

        def on_step(tokens: int) -> None:
            count[0] += tokens
            now = time.perf_counter()
            if now - shown[0] >= 1.0:  # at most one redraw a second
                shown[0] = now
                bar.set_postfix(tokens=count[0], tok_s=f"{count[0] / max(now - began, 1e-9):.0f}")

        self.backend.on_step = on_step

    # -- rows --------------------------------------------------------------------------------
    def _seed(self, parent: Parent) -> int:
        """Each parent's request draws from its own stream (see ``request_seed``)."""
        return request_seed(self.settings.seed, self.role, parent.request_id)

    def _rows(self, batch: list[Parent], completions: list[list[Completion]]) -> pa.Table:
        s, rows = self.settings, []
        for parent, outs in zip(batch, completions, strict=True):
            if len(outs) != s.n:
                raise LakeError(f"backend returned {len(outs)} samples for {parent.request_id}, "
                                f"expected {s.n}")
            seed = self._seed(parent)
            for index, out in enumerate(outs):
                pred, ok = self._parse(parent, out)
                rows.append({
                    "dataset": self.key.dataset, "shard": self.key.shard, **parent.ids,
                    **self._child_id(parent, index),
                    "prompt": parent.messages, "text": out.text, "pred_answer": pred,
                    "parse_ok": ok, "error": out.error, "finish_reason": out.finish_reason,
                    "model": self.backend.model_id, "adapter": s.adapter,
                    "template_hash": parent.template.hash, "temperature": s.temperature,
                    "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed,
                    "request_seed": seed, "n_samples": s.n,
                    "n_prompt_tokens": out.n_prompt_tokens, "n_tokens": out.n_tokens,
                    "parent_fingerprint": parent.fingerprint,
                    "fingerprint": node_fingerprint(parent.fingerprint, out.text, out.error),
                })
        return pa.Table.from_pylist(rows, schema=schemas.schema_of(self.table))

    def _child_id(self, parent: Parent, index: int) -> dict:
        if self.role == "generator":
            return {"g_idx": index, "g_id": generation_id(parent.request_id, index)}
        if self.role == "verifier":
            return {"v_idx": index, "v_id": critique_id(parent.request_id, index)}
        return {"r_idx": index, "r_id": refinement_id(parent.request_id, index)}

    def _parse(self, parent: Parent, out: Completion) -> tuple[str | None, bool]:
        """Never raises: unparsable output is stored with parse_ok = False."""
        if out.text is None:
            return None, False
        if self.role == "verifier":
            verdicts = VERDICT_RE.findall(out.text)
            return (verdicts[-1].lower(), True) if verdicts else (None, False)
        try:
            pred = checker_for(parent.family).extract(out.text, parent.choices,
                                                      truncated=out.finish_reason == "length")
        except Exception:  # a parser bug on odd text must not lose the row
            pred = None
        return pred, pred is not None

    # -- checkpoints ---------------------------------------------------------------------------
    def _fingerprint(self, parents: list[Parent]) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({
            "model": self.backend.model_id, "settings": self.settings.model_dump(
                exclude={"batch_prompts"}), "role": self.role, "cut_loops": self.cut_loops,
        }, sort_keys=True).encode())
        for parent in parents:
            digest.update(json.dumps([parent.request_id, parent.messages, parent.template.hash,
                                      parent.fingerprint]).encode())
        return digest.hexdigest()

    def _resume(self, fingerprint: str) -> set[str]:
        storage = self.lake.storage
        manifest = storage.read_bytes(*self.checkpoints, "manifest.json")
        if manifest is not None:
            if json.loads(manifest).get("fingerprint") == fingerprint:
                return {r for f in self._batch_files()
                        for r in self._read_batch(f, [self._parent_column()])
                        .column(0).to_pylist()}
            self.log(f"discarding checkpoints of {self.table} {self.key}: model, sampling, "
                     "prompts or parents changed since they were written")
        storage.delete_tree(*self.checkpoints)
        storage.write_bytes(json.dumps({"fingerprint": fingerprint}).encode(),
                            *self.checkpoints, "manifest.json")
        return set()

    def _parent_column(self) -> str:
        return {"generator": "question_id", "verifier": "g_id", "refiner": "v_id"}[self.role]

    def _batch_files(self) -> list[str]:
        return self.lake.storage.list_files(*self.checkpoints, prefix="batch-",
                                            suffix=".parquet")

    def _read_batch(self, name: str, columns: list[str] | None = None) -> pa.Table:
        storage = self.lake.storage
        return pq.read_table(storage.path(*self.checkpoints, name), columns=columns,
                             filesystem=storage.filesystem)

    def _checkpoint(self, rows: pa.Table) -> None:
        first = rows.column(self._parent_column())[0].as_py() if rows.num_rows else "empty"
        name = hashlib.sha256(first.encode()).hexdigest()[:16]
        buffer = pa.BufferOutputStream()
        pq.write_table(rows, buffer, compression="zstd")
        self.lake.storage.write_bytes(buffer.getvalue().to_pybytes(), *self.checkpoints,
                                      f"batch-{len(self._batch_files()):05d}-{name}.parquet")

    def _finish(self, parents: list[Parent]) -> pa.Table:
        files = self._batch_files()
        schema = schemas.schema_of(self.table)
        table = pa.concat_tables([self._read_batch(f) for f in files]) if files \
            else schema.empty_table()
        id_column = {"generator": "g_id", "verifier": "v_id", "refiner": "r_id"}[self.role]
        frame = pl.from_arrow(table).unique(subset=[id_column], keep="first",
                                            maintain_order=True).sort(id_column)
        expected = len(parents) * self.settings.n
        if frame.height != expected:
            raise LakeError(f"{self.table} {self.key}: {frame.height} rows after expansion, "
                            f"expected {expected}; checkpoints kept for a retry")
        result = frame.to_arrow().cast(schema)
        self.written = self.lake.write_partition(self.table, self.key, result,
                                                 write_id=self.write_id)
        self.lake.storage.delete_tree(*self.checkpoints)
        return result


def expand(lake: Lake, key: PartitionKey, role: str, backend: Backend,
           settings: RoleSettings | None = None, log: Callable[[str], None] | None = None,
           show_progress: bool = True, prompts: str | None = None,
           cut_loops: bool = False) -> pa.Table:
    """Generate, checkpoint and write one role's table for one partition, with the prompt set
    ``prompts`` (None: the questions' family's own); ``cut_loops`` ends looping samples
    early (``SamplingParams.cut_loops``)."""
    return Expansion(lake, key, role, backend, settings or RoleSettings(), log,
                     show_progress, prompts, cut_loops).run()
