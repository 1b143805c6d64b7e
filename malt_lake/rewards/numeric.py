"""Numeric answers (GSM8K, the built-in arithmetic): a number, compared as an exact rational.

Within a marker segment the FIRST number is the answer (after the last "=" of an equation such
as ``3 + 4 = 7``), so units, explanations and parentheses after it do not leak in. A complete
text with no marker falls back to the last number in the text (the GSM8K rule); a truncated one
gets no answer.
"""

from __future__ import annotations

import re
from collections import deque
from decimal import Context, Decimal
from fractions import Fraction

from malt_lake.rewards.base import markers

NUMBER_RE = re.compile(
    r"(?<![A-Za-z0-9.])"
    r"(?:(?P<neg>-)?\$\s?(?P<neg2>-)?|(?P<neg3>-))?"        # -5, -$5, $-5, $ 5 (not "- 5")
    r"(?:(?P<whole>\d+)\s+(?=\d+\s?/\s?\d))?"              # a mixed number: 2 1/2
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"  # 1,234.5  72  .5
    r"(?:\s?/\s?(?P<den>\d+)(?![\d.]))?"                   # 3/4
)
# the arithmetic run that starts at a segment's first number: "3 + 4 = 7", "12 × 2 = $24",
# "1/2 of 36 = 18"; a clause after it ("18, so 18 × 2 = 36") is not part of it
EXPRESSION_RE = re.compile(
    r"(?:[\d \t.$%+\-*/×÷^=≈·]|,(?=\d)|\b(?:of|times|plus|minus|divided by|multiplied by|x|X)\b)*")
EQUALS_RE = re.compile(r"=|≈")
FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}|\\[dt]?frac(\d)(\d)")
TEXT_RE = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")
PAREN_RE = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
LATEX_SUBS = [("−", "-"), ("{,}", ","), ("\\$", "$"), ("\\%", "%"), ("\\!", ""), ("\\,", ""),
              ("\\left", ""), ("\\right", ""), ("\\(", " "), ("\\)", " "), ("\\[", " "),
              ("\\]", " "), ("\\times", "×"), ("\\cdot", "·"), ("\\div", "÷"),
              ("\\approx", "≈"), ("~", " ")]
_EXACT = Context(prec=60)
MAX_NUMBER_CHARS = 60


class NumericChecker:
    name = "numeric"

    def extract(self, text: str | None, choices: list[dict] | None = None, *,
                truncated: bool = False) -> str | None:
        if not text:
            return None
        for marker in reversed(markers(text, ("final", "hashes", "boxed"), truncated=truncated)):
            value = segment_number(marker.segment)
            if value is not None:
                return canonical(value)
        if truncated:  # a stray number in a cut text is not an answer
            return None
        value = last_number(text)
        return canonical(value) if value is not None else None

    def equivalent(self, pred: str, gold: str) -> bool:
        a, b = segment_number(pred), segment_number(gold)
        return a is not None and b is not None and a == b


def segment_number(segment: str) -> Fraction | None:
    """The number a marker segment states: its first number, or the result of the equation
    that starts there (``3 + 4 = 7`` -> 7, ``18 = 6 + 12`` -> 18); remarks in brackets
    (``18 (6 + 12)``) are skipped unless they hold the only number."""
    plain = _delatex(segment)
    for candidate in (_drop_parens(plain), plain):
        first = NUMBER_RE.search(candidate)
        if first is None:
            continue
        run = EXPRESSION_RE.match(candidate, first.start()).group()
        sides = EQUALS_RE.split(run)
        # "3 + 4 = 7" states its result last; "18 = 6 + 12" states it first
        answer_first = len(sides) > 1 and NUMBER_RE.fullmatch(sides[0].strip()) is not None
        result = None if len(sides) == 1 or answer_first else NUMBER_RE.search(sides[-1])
        return _value(result or first)
    return None


def last_number(text: str) -> Fraction | None:
    """The last number anywhere in ``text`` (the no-marker GSM8K rule)."""
    last = deque(NUMBER_RE.finditer(_delatex(text)), maxlen=1)
    return _value(last[0]) if last else None


def canonical(value: Fraction) -> str:
    """``72``, ``72.0`` and ``72.00`` all become ``72``; ``0.50`` -> ``0.5``; ``1/3`` stays."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:  # not a terminating decimal
        return f"{value.numerator}/{value.denominator}"
    quotient = _EXACT.divide(Decimal(value.numerator), Decimal(value.denominator))
    return format(quotient.normalize(_EXACT), "f")


def _value(match: re.Match[str]) -> Fraction | None:
    if len(match.group()) > MAX_NUMBER_CHARS:  # a repetition loop of digits is no answer
        return None
    value = _magnitude(match)
    if value is None:
        return None
    return -value if match["neg"] or match["neg2"] or match["neg3"] else value


def _magnitude(match: re.Match[str]) -> Fraction | None:
    value = Fraction(match["num"].replace(",", ""))
    if match["den"] is not None:
        if int(match["den"]) == 0:
            return None
        value /= int(match["den"])
    if match["whole"] is None:
        return value
    if match["den"] is None or value >= 1:  # "3 5/2" is no mixed number: the first stands
        return Fraction(int(match["whole"]))
    return value + int(match["whole"])


def _delatex(text: str) -> str:
    """LaTeX number spellings to plain ones: ``\\$1{,}234``, ``\\frac{3}{4}``, ``25\\%``."""
    if "\\" not in text and "−" not in text and "{" not in text and "~" not in text:
        return text
    text = TEXT_RE.sub(r" \1 ", text)
    text = FRAC_RE.sub(lambda m: f"{m[1] or m[3]}/{m[2] or m[4]}", text)
    for old, new in LATEX_SUBS:
        text = text.replace(old, new)
    return text


def _drop_parens(text: str) -> str:
    """``18 (6 + 12)`` -> ``18``: remarks in brackets are not the stated answer."""
    while True:
        dropped = PAREN_RE.sub(" ", text)
        if dropped == text:
            return dropped
        text = dropped
