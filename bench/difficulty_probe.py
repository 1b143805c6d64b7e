"""How hard should the built-in arithmetic set be? Single-agent (generator-only) accuracy of a
model per difficulty setting, so the demo's trees hold both right and wrong answers.

    .venv/bin/python bench/difficulty_probe.py --count 48 --max-tokens 128
    .venv/bin/python bench/difficulty_probe.py --prompts numeric   # the step-by-step prompts
"""

from __future__ import annotations

import argparse
import time

from malt_lake.backends import BackendSettings, GenerationRequest, SamplingParams, build_backend
from malt_lake.datasets.arithmetic import generate
from malt_lake.prompts import template
from malt_lake.rewards import checker_for
from malt_lake.rewards.base import check
from malt_lake.settings import BUILTIN_PROMPTS, ArithmeticSource

SETTINGS = {
    "1 step, numbers <= 9, + - x": dict(max_steps=1, max_number=9),
    "1 step, numbers <= 9, + -": dict(max_steps=1, max_number=9, operations=["add", "sub"]),
    "1 step, numbers <= 5, + -": dict(max_steps=1, max_number=5, operations=["add", "sub"]),
    "1 step, numbers <= 5, +": dict(max_steps=1, max_number=5, operations=["add"]),
    "1 step, numbers <= 3, + -": dict(max_steps=1, max_number=3, operations=["add", "sub"]),
    "1 step, numbers <= 3, +": dict(max_steps=1, max_number=3, operations=["add"]),
    "1 step, numbers <= 9, +": dict(max_steps=1, max_number=9, operations=["add"]),
    "1-2 steps, numbers <= 9, + -": dict(max_steps=2, max_number=9, operations=["add", "sub"]),
    "1 step, numbers <= 20, +": dict(max_steps=1, max_number=20, operations=["add"]),
    "1 step, numbers <= 50, +": dict(max_steps=1, max_number=50, operations=["add"]),
    "1-2 steps, numbers <= 9, +": dict(max_steps=2, max_number=9, operations=["add"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--only", nargs="*", help="Setting names to probe (default all).")
    parser.add_argument("--prompts", default=BUILTIN_PROMPTS,
                        help="Prompt set (default the built-in arithmetic's).")
    parser.add_argument("--seed", type=int, default=7, help="Problem seed (a dev range).")
    args = parser.parse_args()
    backend = build_backend(BackendSettings(model=args.model))
    tpl, checker = template(args.prompts, "generator"), checker_for("numeric")
    params = SamplingParams(n=1, temperature=0.3, max_tokens=args.max_tokens, seed=0,
                            stop=tpl.stop)
    print(f"{'setting':32} {'SA accuracy':>11} {'parsed':>7} {'s':>6}")
    for name, knobs in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        problems = list(generate(ArithmeticSource(count=args.count, seed=args.seed, **knobs)))
        started = time.perf_counter()
        outs = backend.generate([GenerationRequest(f"p{p.index}", tpl.render(p.question))
                                 for p in problems], params)
        results = [check(checker, o[0].text, str(p.answer),
                         truncated=o[0].finish_reason == "length")
                   for p, o in zip(problems, outs, strict=True)]
        accuracy = sum(r.reward for r in results) / len(results)
        parsed = sum(r.parse_ok for r in results) / len(results)
        print(f"{name:32} {accuracy:11.1%} {parsed:7.0%} {time.perf_counter() - started:6.1f}",
              flush=True)


if __name__ == "__main__":
    main()
