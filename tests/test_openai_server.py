"""The OpenAI backend against a real OpenAI-compatible server: ``transformers serve`` with the
embedded model on 127.0.0.1, driven through the ``openai`` client, for a G -> V -> R chain and
one expansion of the generator role into the lake."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from malt_lake.backends.base import GenerationRequest, SamplingParams
from malt_lake.backends.openai_backend import OpenAIBackend
from malt_lake.backends.transformers_backend import TransformersBackend, resolve_model
from malt_lake.expand import RoleSettings, expand
from malt_lake.ingest import build_catalog, shard_questions, write_catalog
from malt_lake.names import PartitionKey
from malt_lake.prompts import template
from malt_lake.settings import ArithmeticSource, DatasetSpec, ProjectSettings
from tests.ports import free_port

QUESTIONS = ["Sam has 2 apples. Sam buys 3 more apples. How many apples does Sam have now?",
             "Kai has 4 stamps. Kai finds 3 more stamps. How many stamps does Kai have now?"]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """(base URL, model dir) of ``transformers serve`` on the embedded model, fp32 on CPU."""
    cli = Path(sys.executable).with_name("transformers")
    if not cli.is_file() and shutil.which("transformers") is None:
        pytest.fail("the transformers CLI is missing; run ./scripts/setup.sh")
    model_dir = str(resolve_model("embedded")[1])
    port = free_port()
    proc = subprocess.Popen(
        [str(cli), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
         "--device", "cpu", "--dtype", "float32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stdout.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not come up in 180 s")
            time.sleep(0.5)
        yield f"{url}/v1", model_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_chain_through_a_real_server_matches_the_local_decoder_greedy(served):
    base_url, model_dir = served
    backend = OpenAIBackend(base_url, model_dir, concurrency=2)
    local = TransformersBackend(model_dir, dtype="float32")
    greedy = SamplingParams(n=1, temperature=0, max_tokens=24)
    generator = template("numeric-brief", "generator")
    asks = [GenerationRequest(f"q{i}", generator.render(q)) for i, q in enumerate(QUESTIONS)]
    answers = backend.generate(asks, greedy)
    # the same weights, chat template and greedy decoding: the same text as our decoder
    assert [c[0].text for c in answers] == [c[0].text for c in local.generate(asks, greedy)]
    for (answer,) in answers:
        assert answer.error is None and answer.text
        assert 0 < answer.n_tokens <= 24 and answer.n_prompt_tokens > 20
        assert answer.finish_reason in {"stop", "length"}
    critique_prompt = template("numeric-brief", "verifier").render(
        QUESTIONS[0], answer=answers[0][0].text)
    (critique,) = backend.generate([GenerationRequest("v", critique_prompt)], greedy)[0]
    refine_prompt = template("numeric-brief", "refiner").render(
        QUESTIONS[0], answer=answers[0][0].text, critique=critique.text)
    (final,) = backend.generate([GenerationRequest("r", refine_prompt)], greedy)[0]
    assert critique.text and final.text and final.error is None


def test_expansion_through_a_real_server_writes_n_samples_per_parent(served, lake):
    """``transformers serve`` ignores n: the backend asks again for each missing sample, so
    every question still gets its n generations, in the lake like any backend's."""
    base_url, model_dir = served
    settings = ProjectSettings(datasets=[DatasetSpec(
        name="arith", family="numeric", shard_size=4, prompts="numeric-brief",
        splits={"train": ArithmeticSource(count=4, seed=0)})])
    key = PartitionKey("arith", "train", 0)
    write_catalog(lake, build_catalog(settings))
    lake.write_partition("questions", key, shard_questions(lake, settings, key))
    table = expand(lake, key, "generator", OpenAIBackend(base_url, model_dir, concurrency=2),
                   RoleSettings(n=2, temperature=0.3, max_tokens=16), show_progress=False,
                   prompts="numeric-brief")
    rows = table.to_pylist()
    assert sorted((r["question_id"][-1], r["g_idx"]) for r in rows) == [
        (q, g) for q in "0123" for g in (0, 1)]
    assert all(r["error"] is None and r["text"] and 0 < r["n_tokens"] <= 16 for r in rows)
    assert lake.has_data("generations")
