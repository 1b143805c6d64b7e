"""Stop patterns: a completion ends where its role's answer is complete, on every backend."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from malt_lake.backends.base import Completion, GenerationRequest, SamplingParams, cut_at_stop
from malt_lake.backends.fake import FakeBackend
from malt_lake.backends.openai_backend import OpenAIBackend
from malt_lake.errors import ConfigError
from malt_lake.expand import RoleSettings, expand
from malt_lake.prompts import shared_stop, template
from malt_lake.settings import ArithmeticSource, DatasetSpec, load_settings
from tests.test_backends import ChatServer
from tests.test_expansion import KEY, ingest_tiny


def test_a_completion_ends_at_the_earliest_match_of_any_stop_pattern():
    text = "3 + 4 = 7.\nFinal Answer: 7\nVerdict: correct\nFinal Answer: 8\n"
    cut = cut_at_stop(Completion(text, 10, 40, "length"), (r"Verdict: \w+", r"Answer: \d+\n"))
    assert cut.text == "3 + 4 = 7.\nFinal Answer: 7\n"
    assert cut.finish_reason == "stop" and cut.n_tokens == 40
    unmatched = Completion("no answer line", 10, 5, "length")
    assert cut_at_stop(unmatched, (r"Answer: \d+\n",)) is unmatched
    failed = Completion.failed("boom")
    assert cut_at_stop(failed, (r"x",)) is failed


def test_a_stop_pattern_that_is_not_a_regular_expression_is_refused():
    with pytest.raises(ValueError, match="not a regular expression"):
        SamplingParams(stop=("(unclosed",))


def test_the_builtin_prompt_set_stops_at_the_answer_line_and_the_verdict():
    answer = template("numeric-brief", "generator").stop
    verdict = template("numeric-brief", "verifier").stop
    rambling = "Ava has 1 + 8 = 9 marbles.\nFinal Answer: 9\nVerdict: incorrect\nFinal Answer: 9\n"
    assert cut_at_stop(Completion(rambling, 1, 1, "length"), answer).text == \
        "Ava has 1 + 8 = 9 marbles.\nFinal Answer: 9\n"
    critique = "Step 1 is right.\nVerdict: correct\nVerdict: incorrect\nVerdict: incorrect"
    assert cut_at_stop(Completion(critique, 1, 1, "length"), verdict).text == \
        "Step 1 is right.\nVerdict: correct"
    # the family's own step-by-step prompts have none, and the stops are part of the hash
    assert template("numeric", "generator").stop == ()
    assert template("numeric-brief", "generator").hash != template("numeric", "generator").hash


def test_one_backend_call_takes_one_stop_set():
    brief, stepwise = template("numeric-brief", "verifier"), template("numeric", "verifier")
    assert shared_stop([brief, brief]) == brief.stop
    assert shared_stop([]) == ()
    with pytest.raises(ConfigError, match="several stop-pattern sets"):
        shared_stop([brief, stepwise])


def test_a_dataset_names_a_prompt_set_that_exists():
    with pytest.raises(ValidationError, match="no 'generator' prompt in prompt set 'terse'"):
        DatasetSpec(name="arith", family="numeric", prompts="terse",
                    splits={"train": ArithmeticSource()})
    builtin = load_settings("study").dataset("arith")
    assert builtin.prompts == "numeric-brief"


def test_expansion_sends_its_prompt_sets_stops_and_records_its_template(lake):
    ingest_tiny(lake, 2)
    seen: list[tuple[str, ...]] = []

    class Recording(FakeBackend):
        def generate(self, requests, params):
            seen.append(params.stop)
            return super().generate(requests, params)

    rows = expand(lake, KEY, "generator", Recording(),
                  RoleSettings(n=2, max_tokens=16), show_progress=False,
                  prompts="numeric-brief").to_pylist()
    assert seen == [template("numeric-brief", "generator").stop]
    assert {r["template_hash"] for r in rows} == {template("numeric-brief", "generator").hash}
    assert "at most three sentences" in rows[0]["prompt"][-1]["content"]


def test_the_openai_backend_cuts_its_text_at_the_stop_pattern():
    server = ChatServer()
    try:
        backend = OpenAIBackend(server.url, "m", max_retries=0)
        out = backend.generate([GenerationRequest("q", [{"role": "user", "content": "hi"}])],
                               SamplingParams(n=2, max_tokens=8, stop=(r"#\d",)))
    finally:
        server.close()
    assert [c.text for c in out[0]] == ["hi #0", "hi #1"]
    assert {c.finish_reason for c in out[0]} == {"stop"}


def test_the_fast_decoder_stops_early_and_equals_the_full_text_cut():
    """Greedy in fp32: the completion with a stop pattern is the full completion cut at the
    pattern's first match, and the decoder stopped soon after it instead of running on."""
    from malt_lake.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("embedded", dtype="float32")
    tpl = template("numeric-brief", "generator")
    requests = [GenerationRequest(f"q{i}", tpl.render(q)) for i, q in enumerate(
        ["Sam has 2 apples. Sam buys 3 more apples. How many apples does Sam have now?",
         "Kai has 4 stamps. Kai finds 3 more stamps. How many stamps does Kai have now?"])]
    full = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=48))
    first_words = [c[0].text.split()[2] for c in full]  # a word early in each answer
    stop = tuple(rf"\b{word}\b" for word in first_words)
    cut = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=48,
                                                    stop=stop))
    for whole, short in zip(full, cut, strict=True):
        assert short[0].text == cut_at_stop(whole[0], stop).text
        assert short[0].finish_reason == "stop"
        assert short[0].n_tokens < whole[0].n_tokens, (short[0], whole[0])


def test_the_stop_check_with_every_row_already_ended_changes_nothing():
    """Every live row of a batch can end (end of sequence) in the very step of a stop check;
    the check then has no row to decode. ``batch_decode([])`` returns one text, not none,
    which once crashed a 3,600-row evaluation batch."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from malt_lake.backends.transformers_backend import TransformersBackend, resolve_model

    decoder = SimpleNamespace(
        tokenizer=AutoTokenizer.from_pretrained(resolve_model("embedded")[1]))
    ended: list[str | None] = ["stop", "stop", None]
    TransformersBackend._finish_stopped(decoder, [[28], [29], [30]], ended, [0, 1],
                                        (r"\d",))
    assert ended == ["stop", "stop", None]
    seven = decoder.tokenizer.encode("7 apples")
    TransformersBackend._finish_stopped(decoder, [[28], [28], seven], ended, [0, 1, 2],
                                        (r"\d",))  # a live row with a match still ends
    assert ended == ["stop", "stop", "stop"]
