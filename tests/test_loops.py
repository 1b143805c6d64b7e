"""Loop cuts: a completion that repeats itself ends as truncated instead of running on."""

from __future__ import annotations

from malt_lake.backends.base import LOOP_WINDOWS, GenerationRequest, SamplingParams, looping
from malt_lake.backends.fake import FakeBackend
from malt_lake.expand import RoleSettings, expand
from malt_lake.settings import load_settings
from tests.test_expansion import KEY, ingest_tiny


def test_a_repeated_sentence_is_a_loop_and_varied_text_is_not():
    sentence = [11, 12, 13, 14, 15, 16, 17]  # "He has 2 apples left." as token ids
    assert looping(list(range(100)) + sentence * 10)
    assert not looping(list(range(200)))  # no repeats at all
    assert not looping((sentence * 10)[:LOOP_WINDOWS[0] - 1])  # too short to judge
    # "Step 9: Determine the number of beads Rosa has now." with the step counting up: a loop
    line = [22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]
    assert looping([t for i in range(12) for t in (21, 100 + i, *line)])
    # a 30-token line said again and again, once in a while with another verdict after it
    long_line = list(range(500, 530))
    assert looping([t for i in range(6) for t in (*long_line, 40, 41 + i % 2)])
    # the same sentence twice inside otherwise new text is not
    assert not looping(list(range(300, 330)) + sentence + list(range(400, 420)) + sentence)


def test_expansion_asks_the_backend_to_cut_loops_when_the_dataset_says_so(lake):
    ingest_tiny(lake, 2)
    seen: list[bool] = []

    class Recording(FakeBackend):
        def generate(self, requests, params):
            seen.append(params.cut_loops)
            return super().generate(requests, params)

    expand(lake, KEY, "generator", Recording(), RoleSettings(n=2, max_tokens=16),
           show_progress=False, cut_loops=True)
    assert seen == [True]
    assert load_settings("study").dataset("arith").cut_loops
    assert load_settings("demo").dataset("arith").cut_loops


def test_the_fast_decoder_cuts_a_loop_and_keeps_what_came_before():
    """Greedy in fp32 on a prompt the model answers by repeating one line: with cut_loops
    the completion ends as truncated well before the budget, and its text is the start of
    the uncut completion."""
    from malt_lake.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend("embedded", dtype="float32")
    requests = [GenerationRequest("loop", [{"role": "user", "content": LOOPING_PROMPT}])]
    budget = 160
    full = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=budget))[0][0]
    cut = backend.generate(requests, SamplingParams(n=1, temperature=0, max_tokens=budget,
                                                    cut_loops=True))[0][0]
    assert full.finish_reason == "length" and full.n_tokens == budget, full
    assert cut.finish_reason == "length"
    assert LOOP_WINDOWS[0] <= cut.n_tokens < budget - 32, cut
    assert full.text.startswith(cut.text)


LOOPING_PROMPT = "Write the word 'apple' two hundred times."
