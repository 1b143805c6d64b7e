"""Tree expansion: tree shape and ids, recorded parameters, unparsable output, resume."""

from __future__ import annotations

import pytest

from malt_lake.backends.base import Completion
from malt_lake.backends.fake import FakeBackend
from malt_lake.errors import LakeError
from malt_lake.expand import Expansion, RoleSettings, expand
from malt_lake.ingest import build_catalog, shard_questions, write_catalog
from malt_lake.names import PartitionKey
from malt_lake.settings import ArithmeticSource, DatasetSpec, ProjectSettings

KEY = PartitionKey("arith", "train", 0)
ROLES = ("generator", "verifier", "refiner")
TABLES = ("generations", "critiques", "refinements")


def tiny_settings(count: int = 4) -> ProjectSettings:
    return ProjectSettings(datasets=[DatasetSpec(
        name="arith", family="numeric", shard_size=count,
        splits={"train": ArithmeticSource(count=count, seed=0)})])


def ingest_tiny(lake, count: int = 4) -> None:
    settings = tiny_settings(count)
    write_catalog(lake, build_catalog(settings))
    lake.write_partition("questions", KEY, shard_questions(lake, settings, KEY))


def test_tree_has_n_n2_n3_children_with_path_ids(lake):
    ingest_tiny(lake, 3)
    backend = FakeBackend()
    tables = [expand(lake, KEY, role, backend, RoleSettings(n=2, batch_prompts=2),
                     show_progress=False) for role in ROLES]
    assert [t.num_rows for t in tables] == [3 * 2, 3 * 4, 3 * 8]
    refs = tables[2].to_pylist()
    assert refs[0]["r_id"] == "arith:train-000000/g0/v0/r0"
    assert refs[-1]["r_id"] == "arith:train-000002/g1/v1/r1"
    assert all(r["r_id"] == f"{r['v_id']}/r{r['r_idx']}" and r["v_id"].startswith(r["g_id"])
               for r in refs)
    for table in tables:
        for column in ("model", "template_hash", "temperature", "top_p", "max_tokens", "seed",
                       "n_samples", "n_prompt_tokens", "n_tokens", "prompt"):
            assert table.column(column).null_count == 0, column
    # the refiner saw the question, the generator's answer and the critique
    prompt = refs[0]["prompt"][-1]["content"]
    gen = tables[0].to_pylist()[0]
    crit = tables[1].to_pylist()[0]
    assert gen["text"] in prompt and crit["text"] in prompt and "Problem:" in prompt


class GarbageBackend(FakeBackend):
    """Unparsable text, and one sample that fails outright."""

    def generate(self, requests, params):
        out = []
        for i, _ in enumerate(requests):
            samples = [Completion("I am not sure.", 5, 4, "stop") for _ in range(params.n)]
            if i == 0:
                samples[0] = Completion.failed("server said no")
            out.append(samples)
        return out


def test_unparsable_output_is_stored_not_raised_and_failures_get_no_children(lake):
    ingest_tiny(lake, 2)
    gens = expand(lake, KEY, "generator", GarbageBackend(), RoleSettings(n=2),
                  show_progress=False).to_pylist()
    assert [g["parse_ok"] for g in gens] == [False] * 4
    assert gens[0]["error"] == "server said no" and gens[0]["text"] is None
    crits = expand(lake, KEY, "verifier", FakeBackend(), RoleSettings(n=2),
                   show_progress=False).to_pylist()
    assert {c["g_id"] for c in crits} == {g["g_id"] for g in gens[1:]}  # no children of g0


def test_missing_parent_table_is_a_clear_error(lake):
    ingest_tiny(lake, 2)
    with pytest.raises(LakeError, match=r"no generations for partition arith\.train\.0000"):
        expand(lake, KEY, "verifier", FakeBackend(), show_progress=False)


class CrashAfter(FakeBackend):
    def __init__(self, batches: int) -> None:
        super().__init__()
        self.left = batches

    def generate(self, requests, params):
        if self.left == 0:
            raise RuntimeError("crash")
        self.left -= 1
        return super().generate(requests, params)


def test_resume_uses_checkpoints_and_changed_settings_discard_them(lake):
    ingest_tiny(lake, 6)
    settings = RoleSettings(n=2, batch_prompts=2)
    with pytest.raises(RuntimeError):
        expand(lake, KEY, "generator", CrashAfter(2), settings, show_progress=False)
    assert not lake.has_partition("generations", KEY)  # nothing half-written
    counting = FakeBackend()
    resumed = expand(lake, KEY, "generator", counting, settings, show_progress=False)
    assert counting.calls == 1  # only the one remaining batch of 2 questions
    clean = expand(lake, KEY, "generator", FakeBackend(), settings, show_progress=False)
    assert resumed.equals(clean)
    with pytest.raises(RuntimeError):
        expand(lake, KEY, "generator", CrashAfter(1), settings, show_progress=False)
    other = FakeBackend()
    expand(lake, KEY, "generator", other, settings.model_copy(update={"seed": 7}),
           show_progress=False)
    assert other.calls == 3  # the seed changed: old checkpoints discarded, all regenerated


def test_n_below_one_is_refused():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RoleSettings(n=0)


class SeedPerRequestBackend:
    """Like vLLM: a sample is a pure function of the prompt and its seed (seed + i for the
    i-th of n). Answers are always equal, so every critique prompt is the same."""

    model_id = "seed-per-request"

    def generate(self, requests, params):
        return [[Completion("Final Answer: 1" if "Proposed" not in r.messages[-1]["content"]
                            else f"Verdict: correct (seed {r.seed_or(params) + i})", 1, 1, "stop")
                 for i in range(params.n)] for r in requests]


def test_equal_parents_still_get_independent_children_on_a_seed_per_request_backend(lake):
    """Each parent's request has a seed of its own, derived from (run seed, role, parent id):
    equal answers give equal critique prompts, which vLLM would otherwise answer identically."""
    ingest_tiny(lake, 2)
    backend = SeedPerRequestBackend()
    settings = RoleSettings(n=3, max_tokens=8)
    gens = expand(lake, KEY, "generator", backend, settings, show_progress=False)
    crits = expand(lake, KEY, "verifier", backend, settings, show_progress=False).to_pylist()
    assert len({tuple(r["prompt"][-1].values()) for r in crits}) < len(crits)  # equal prompts
    assert len({r["text"] for r in crits}) == len(crits)  # yet every critique differs
    seeds = {r["g_id"]: r["request_seed"] for r in crits}
    assert len(set(seeds.values())) == gens.num_rows  # one stream per parent
    assert {r["seed"] for r in crits} == {0}  # the run's seed is kept beside it


class Tripwire(FakeBackend):
    def generate(self, requests, params):
        raise AssertionError("generated again")


def test_a_retried_step_whose_write_committed_does_not_generate_again(lake):
    ingest_tiny(lake, 2)
    settings = RoleSettings(n=2)
    first = Expansion(lake, KEY, "generator", FakeBackend(), settings, show_progress=False,
                      write_id="run-1/generations")
    table = first.run()
    retried = Expansion(lake, KEY, "generator", Tripwire(), settings, show_progress=False,
                        write_id="run-1/generations")
    assert retried.run().equals(table)
    assert retried.written.skipped and retried.written.version == first.written.version
    assert retried.written.rows == table.num_rows == 4
