"""The built-in arithmetic word problems: our own, deterministic, with difficulty knobs.

A problem is a start value followed by ``steps`` operations (add, subtract, multiply), told as
a short story. Problem ``i`` of a split is a pure function of ``(seed, i)``. The problem
*space* is cut in two by a hash of the arithmetic alone (start value and operations, not the
names or wording): held-out splits draw only from one side, other splits only from the other,
so held-out arithmetic never appears in training whatever the seeds and counts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from malt_lake.settings import ArithmeticSource

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
         "Kai", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards",
         "stamps", "cookies", "beads", "toy cars"]
ADD = ["{name} buys {n} more {item}.", "{name} finds {n} more {item}.",
       "A friend gives {name} {n} more {item}."]
SUB = ["{name} gives away {n} {item}.", "{name} loses {n} {item}.",
       "{name} sells {n} {item}."]
MUL = {2: "{name} doubles the number of {item}.", 3: "{name} triples the number of {item}."}
HELDOUT_BUCKETS = 5  # one bucket in five of the problem space is held out


@dataclass(frozen=True)
class ArithmeticProblem:
    index: int
    question: str
    answer: int
    skeleton: str  # the arithmetic alone, e.g. "7 +3 -2"

    @property
    def solution(self) -> str:
        return f"{self.skeleton} = {self.answer}. Final Answer: {self.answer}"


def is_heldout_skeleton(skeleton: str) -> bool:
    digest = hashlib.sha256(skeleton.encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_BUCKETS == 0


def generate(source: ArithmeticSource) -> Iterator[ArithmeticProblem]:
    """``source.count`` problems, deterministic in ``source`` alone."""
    if source.min_steps > source.max_steps:
        raise ValueError("min_steps must be <= max_steps")
    for index in range(source.count):
        yield _problem(source, index)


def _problem(source: ArithmeticSource, index: int) -> ArithmeticProblem:
    for attempt in range(10_000):
        rng = random.Random(f"arith:{source.seed}:{index}:{attempt}")
        problem = _draw(source, rng, index)
        if is_heldout_skeleton(problem.skeleton) == source.heldout:
            return problem
    raise RuntimeError("arithmetic problem space too small for these knobs")  # pragma: no cover


def _draw(source: ArithmeticSource, rng: random.Random, index: int) -> ArithmeticProblem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(1, source.max_number)
    skeleton = [str(value)]
    sentences = [f"{name} has {value} {item}."]
    for _ in range(rng.randint(source.min_steps, source.max_steps)):
        choices = [op for op in source.operations if op != "sub" or value >= 1]
        if value * 3 > source.max_number * 10:
            choices = [op for op in choices if op != "mul"] or choices
        op = rng.choice(choices)
        if op == "add":
            n = rng.randint(1, source.max_number)
            value += n
            skeleton.append(f"+{n}")
            sentences.append(rng.choice(ADD).format(name=name, n=n, item=item))
        elif op == "sub":
            n = rng.randint(1, min(value, source.max_number))
            value -= n
            skeleton.append(f"-{n}")
            sentences.append(rng.choice(SUB).format(name=name, n=n, item=item))
        else:
            n = rng.choice(sorted(MUL))
            value *= n
            skeleton.append(f"*{n}")
            sentences.append(MUL[n].format(name=name, item=item))
    sentences.append(f"How many {item} does {name} have now?")
    return ArithmeticProblem(index, " ".join(sentences), value, " ".join(skeleton))
