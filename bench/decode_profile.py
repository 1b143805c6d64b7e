"""Where one decode step's time goes: our decoding path on the embedded model, a batch of
``--questions`` x ``--n`` rows (each prompt's cache shared by its n samples), profiled with
torch.profiler for ``--steps`` greedy steps. Prints the step's wall time and its share in
matrix multiplies (the linear layers and attention's batched matmuls), in the other aten
ops (softmax, norms, rotary, activations, copies) and outside any op (Python, dispatch),
and the step's matmul FLOPs against the machine's bf16 matmul rate at the model's shapes
(``expansion_bench.ceiling_measurements``).

``--compile`` also times the same steps with the model's forward compiled by
``torch.compile`` (inductor, CPU) and checks the greedy tokens are identical.

    .venv/bin/python bench/decode_profile.py --questions 32 --steps 24
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.expansion_bench import ceiling_measurements, prompts
from malt_lake.backends.base import SamplingParams
from malt_lake.backends.sampling import TokenSampler
from malt_lake.backends.transformers_backend import TransformersBackend

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
          "aten::linear"}


def decode_setup(backend: TransformersBackend, questions: int, n: int, max_tokens: int):
    """A prefilled batch ready to decode: (cache, first logits, mask) as ``_sample_unsafe``
    builds them."""
    from malt_lake.backends.kv_cache import reserved_cache, share_prefix

    encoded = [backend._encode(m) for m in prompts(questions)]
    cache = reserved_cache(max_tokens + 1)
    logits, mask, _ = backend._prefill(encoded, cache)
    share_prefix(cache, n)
    return cache, logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)


def decode(backend: TransformersBackend, model, state, steps: int) -> list[list[int]]:
    """``steps`` greedy steps through ``model`` (no row finishes: the shape stays fixed),
    each token picked by the backend's own sampler."""
    cache, logits, mask = state
    sampler = TokenSampler(SamplingParams(temperature=0.0), torch.Generator())
    out: list[list[int]] = []
    for _ in range(steps):
        tokens = sampler(logits)
        out.append(tokens.tolist())
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = mask.sum(-1, keepdim=True) - 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    return out


def profile(backend: TransformersBackend, model, args) -> dict[str, float]:
    state = decode_setup(backend, args.questions, args.n, args.steps + 8)
    decode(backend, model, state, 4)  # warm-up (and compilation)
    state = decode_setup(backend, args.questions, args.n, args.steps + 8)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        decode(backend, model, state, args.steps)
        wall = time.perf_counter() - started
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            groups["matmul" if event.key in MATMUL else "other ops"] += \
                event.self_cpu_time_total / 1e6
    total = sum(groups.values())
    return {"wall": wall, **groups, "outside ops": max(wall - total, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    backend = TransformersBackend("embedded", max_batch_rows=args.questions * args.n)
    rows = args.questions * args.n
    n_params = sum(p.numel() for p in backend.model.parameters())
    with torch.inference_mode():
        rate = ceiling_measurements(backend.model, rows)["shape_mix"]
        cases = {"eager": backend.model}
        if args.compile:
            cases["compiled"] = torch.compile(backend.model, dynamic=True)
        reference = None
        for name, model in cases.items():
            result = profile(backend, model, args)
            step = result["wall"] / args.steps
            ceiling = 2 * n_params * rows / (rate * 1e9)
            print(f"{name}: {rows} rows, {step * 1e3:.1f} ms a step, "
                  f"{rows / step:.0f} tok/s, {ceiling / step:.1%} of the ceiling "
                  f"(bf16 matmul {rate:.0f} GFLOP/s)")
            for part in ("matmul", "other ops", "outside ops"):
                share = result.get(part, 0.0) / result["wall"]
                print(f"  {part:12} {result.get(part, 0.0) / args.steps * 1e3:7.2f} ms "
                      f"{share:6.1%}")
            state = decode_setup(backend, args.questions, args.n, 24)
            tokens = decode(backend, model, state, 16)
            if reference is None:
                reference = tokens
            else:
                print(f"  greedy tokens identical to eager: {tokens == reference}")


if __name__ == "__main__":
    main()
