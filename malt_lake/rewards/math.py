"""MATH answers: the last complete ``\\boxed{}``, equivalence by the ``math-verify`` library.

Without a box, the "Final Answer:" segment counts (its first ``$...$`` if it has one). In a
truncated text only a box whose braces close or a "Final Answer:" line a newline ends count.
"""

from __future__ import annotations

import re
from functools import lru_cache

from malt_lake.rewards.base import markers

TIMEOUT_S = 5  # per parse and per verify; math-verify enforces it
INLINE_MATH_RE = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]")


class MathChecker:
    name = "math"

    def extract(self, text: str | None, choices: list[dict] | None = None, *,
                truncated: bool = False) -> str | None:
        if not text:
            return None
        found = markers(text, ("boxed", "final"), truncated=truncated)
        boxes = [m for m in found if m.kind == "boxed"]
        if boxes:
            return boxes[-1].segment
        finals = [m for m in found if m.kind == "final"]
        return _stated(finals[-1].segment) if finals else None

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


def _stated(segment: str) -> str | None:
    """A "Final Answer:" line's math: ``is $\\frac{1}{2}$. I hope it is correct.`` -> the
    ``\\frac{1}{2}`` (its first inline math, else the line less ``$`` and a final period)."""
    inline = INLINE_MATH_RE.search(segment)
    if inline:
        segment = next(group for group in inline.groups() if group is not None)
    return segment.strip().strip("$").rstrip(".").strip() or None


def _squash(text: str) -> str:
    return "".join(text.split()).replace("\\!", "").replace("\\left", "").replace("\\right", "")
