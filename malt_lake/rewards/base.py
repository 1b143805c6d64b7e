"""The checker protocol and the shared 'final answer' marker extraction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from malt_lake.answers import last_boxed

FINAL_ANSWER_RE = re.compile(r"final\s+answer\s*(?:is)?\s*[:：]?\s*(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class CheckResult:
    pred_answer: str | None
    parse_ok: bool
    reward: int


class Checker(Protocol):
    name: str

    def extract(self, text: str | None, choices: list[dict] | None = None) -> str | None:
        """The model's final answer in canonical form, or None if it gave none."""

    def equivalent(self, pred: str, gold: str) -> bool:
        """Whether an extracted answer matches the ground truth."""


def check(checker: Checker, text: str | None, gold: str,
          choices: list[dict] | None = None) -> CheckResult:
    """Extract + compare, never raising on model output."""
    try:
        pred = checker.extract(text, choices) if text else None
    except Exception:  # a parser bug on odd text must not lose the row
        pred = None
    if pred is None:
        return CheckResult(None, False, 0)
    try:
        right = checker.equivalent(pred, gold)
    except Exception:
        right = False
    return CheckResult(pred, True, int(right))


def final_answer_segment(text: str) -> str | None:
    """What follows the last 'Final Answer:' marker (first line of it), else None."""
    matches = list(FINAL_ANSWER_RE.finditer(text))
    if not matches:
        return None
    return matches[-1].group(1).strip().splitlines()[0].strip() or None


def marked_answer(text: str) -> str | None:
    """The 'Final Answer:' segment, else the last \\boxed{} content."""
    return final_answer_segment(text) or last_boxed(text)
