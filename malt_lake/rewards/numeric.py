"""Numeric answers (GSM8K, the built-in arithmetic): a number, compared numerically."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from malt_lake.answers import last_boxed
from malt_lake.rewards.base import final_answer_segment

NUMBER_RE = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+")
HASHES_RE = re.compile(r"####\s*([^\n]+)")


def to_number(text: str) -> Decimal | None:
    """The last number in ``text`` (commas, ``$``, a trailing ``.``/``%`` tolerated)."""
    found = NUMBER_RE.findall(text.replace("−", "-"))
    if not found:
        return None
    raw = found[-1].replace(",", "").replace("$", "").replace(" ", "")
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


class NumericChecker:
    name = "numeric"

    def extract(self, text: str | None, choices: list[dict] | None = None) -> str | None:
        if not text:
            return None
        for segment in (final_answer_segment(text), _hashes(text), last_boxed(text), text):
            if segment:
                number = to_number(segment)
                if number is not None:
                    return _canonical(number)
        return None

    def equivalent(self, pred: str, gold: str) -> bool:
        a, b = to_number(pred), to_number(gold)
        return a is not None and b is not None and abs(a - b) <= Decimal("1e-6") * max(1, abs(b))


def _hashes(text: str) -> str | None:
    found = HASHES_RE.findall(text)
    return found[-1] if found else None


def _canonical(number: Decimal) -> str:
    """``72``, ``72.0`` and ``72.00`` all become ``72``; ``0.50`` becomes ``0.5``."""
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")
