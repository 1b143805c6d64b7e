"""Prefill of one verifier batch (192 rows of the built-in arithmetic) in one forward and in
chunks of rows, side by side in one run, with the machine's bf16 matmul rate at the model's
shapes before and after: how ``PREFILL_CHUNK_TOKENS`` was chosen.

    .venv/bin/python bench/prefill_chunks.py [--rows 192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from malt_lake.backends.kv_cache import reserved_cache
from malt_lake.backends.transformers_backend import TransformersBackend
from malt_lake.datasets.arithmetic import generate
from malt_lake.prompts import template
from malt_lake.settings import BUILTIN_DIFFICULTY, BUILTIN_PROMPTS, ArithmeticSource

sys.path.insert(0, str(Path(__file__).parent))
from expansion_bench import ceiling_measurements


def verifier_prompts(backend: TransformersBackend, rows: int) -> list[list[int]]:
    tpl = template(BUILTIN_PROMPTS, "verifier")
    problems = generate(ArithmeticSource(count=rows, seed=7, **BUILTIN_DIFFICULTY))
    return [backend._encode(tpl.render(p.question, answer=f"{p.question.split('.')[0]}. "
                                       "So the answer is 7.\nFinal Answer: 7\n"))
            for p in problems]


def prefill_seconds(backend: TransformersBackend, prompts: list[list[int]],
                    chunk_tokens: int | None) -> float:
    backend.prefill_chunk_tokens = chunk_tokens
    started = time.perf_counter()
    with torch.inference_mode():
        backend._prefill(prompts, reserved_cache(193))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backend = TransformersBackend("embedded")
    prompts = verifier_prompts(backend, args.rows)
    before = ceiling_measurements(backend.model, 2048)["shape_mix"]
    choices = [None, 1024, 2048, 4096, 8192]
    prefill_seconds(backend, prompts, 4096)  # warm-up
    times: dict[str, list[float]] = {str(c): [] for c in choices}
    for _ in range(args.repeats):  # interleaved: drift of the machine hits every choice alike
        for chunk in choices:
            times[str(chunk)].append(prefill_seconds(backend, prompts, chunk))
    after = ceiling_measurements(backend.model, 2048)["shape_mix"]
    whole = statistics.median(times["None"])
    print(json.dumps({
        "rows": args.rows, "prompt_tokens": sum(len(p) for p in prompts),
        "bf16_matmul_gflops_before_and_after": [round(before, 1), round(after, 1)],
        "median_seconds": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "speedup_vs_one_forward": {k: round(whole / statistics.median(v), 2)
                                   for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
