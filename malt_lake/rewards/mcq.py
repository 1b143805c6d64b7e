"""Multiple choice (CommonsenseQA): the chosen letter, or the option text the model wrote."""

from __future__ import annotations

import re

from malt_lake.answers import last_boxed
from malt_lake.rewards.base import final_answer_segment

LETTER_PATTERNS = [
    re.compile(r"^\(?([A-Z])\)?(?:[.):]|\s|$)"),                     # "B", "(B)", "B) text"
    re.compile(r"\banswer\s+is\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\b(?:option|choice)\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
]


class ChoiceChecker:
    name = "mcq"

    def extract(self, text: str | None, choices: list[dict] | None = None) -> str | None:
        if not text:
            return None
        labels = [c["label"] for c in choices] if choices else [chr(65 + i) for i in range(5)]
        for segment in (final_answer_segment(text), last_boxed(text)):
            if segment:
                found = _letter(segment, labels) or _option_text(segment, choices)
                if found:
                    return found
        for match in reversed(list(LETTER_PATTERNS[1].finditer(text))):
            if match.group(1).upper() in labels:
                return match.group(1).upper()
        return _option_text(text.strip().splitlines()[-1], choices) if text.strip() else None

    def equivalent(self, pred: str, gold: str) -> bool:
        return pred.strip().upper() == gold.strip().upper()


def _letter(segment: str, labels: list[str]) -> str | None:
    segment = segment.strip().strip("*").strip()
    for pattern in LETTER_PATTERNS:
        match = pattern.search(segment)
        if match and match.group(1).upper() in labels:
            return match.group(1).upper()
    return None


def _option_text(segment: str, choices: list[dict] | None) -> str | None:
    """The one choice whose text appears in ``segment`` (longest wins; ambiguous = None)."""
    if not choices:
        return None
    lowered = segment.lower()
    hits = [c for c in choices if c["text"].strip() and
            re.search(rf"\b{re.escape(c['text'].strip().lower())}\b", lowered)]
    if not hits:
        return None
    longest = max(len(c["text"]) for c in hits)
    best = [c for c in hits if len(c["text"]) == longest]
    return best[0]["label"] if len(best) == 1 else None
