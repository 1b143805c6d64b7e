"""MATH answers: the last ``\\boxed{}``, equivalence by the ``math-verify`` library."""

from __future__ import annotations

from functools import lru_cache

from malt_lake.answers import last_boxed
from malt_lake.rewards.base import final_answer_segment

TIMEOUT_S = 5  # per parse and per verify; math-verify enforces it


class MathChecker:
    name = "math"

    def extract(self, text: str | None, choices: list[dict] | None = None) -> str | None:
        if not text:
            return None
        boxed = last_boxed(text)
        if boxed is not None and boxed.strip():
            return boxed.strip()
        segment = final_answer_segment(text)
        return segment.strip().strip("$").rstrip(".").strip() if segment else None

    def equivalent(self, pred: str, gold: str) -> bool:
        if _squash(pred) == _squash(gold):
            return True
        from math_verify import verify

        gold_parsed, pred_parsed = _parse(gold), _parse(pred)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=TIMEOUT_S))


@lru_cache(maxsize=65_536)
def _parse(answer: str) -> tuple:  # a tuple to be cacheable; verify() wants a list
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=TIMEOUT_S))


def _squash(text: str) -> str:
    return "".join(text.split()).replace("\\!", "").replace("\\left", "").replace("\\right", "")
