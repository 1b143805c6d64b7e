"""The checker protocol and the shared answer-marker scanning.

A marker is where the model states its answer: "Final Answer:", "####", ``\\boxed{}`` (and,
for multiple choice, "the answer is"). In a complete text the LAST marker wins. In a text cut
at its token budget (``truncated``) only a marker that visibly ended counts: a box whose
braces close, or a marker line followed by a newline; a line at the very end of a cut text
may stop mid-number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from malt_lake.answers import boxed_answers

# "Final Answer: 18", "The final answer is 18", "**Final Answer:** 18", "### Final Answer\n18";
# not prose such as "to get the final answer, we add".
FINAL_ANSWER_RE = re.compile(
    r"\bfinal\s+answer\b[ \t*_]*(?:is\b[ \t]*[:：]?|[:：=]|(?=\r?\n|$))[ \t*_]*", re.IGNORECASE)
# "#### 72" (GSM8K) or "#### B"; a markdown heading such as "#### Step 2" is no answer marker.
HASHES_RE = re.compile(r"(?<!#)####(?!#)[ \t*]*(?=(?:\\?\$\s?)?[-−]?\.?\d)")
HASHES_LETTER_RE = re.compile(r"(?<!#)####(?!#)[ \t*]*(?=\(?[A-Z]\)?(?:[.):,*]|\s|$))")
# "The answer is B", "Answer: (B)": a multiple-choice marker only
ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is\b|[:：])[ \t*_:：]*", re.IGNORECASE)
LINE_MARKERS = {"final": FINAL_ANSWER_RE, "hashes": HASHES_RE,
                "hashes_letter": HASHES_LETTER_RE, "answer_is": ANSWER_IS_RE}


@dataclass(frozen=True)
class CheckResult:
    pred_answer: str | None
    parse_ok: bool
    reward: int


@dataclass(frozen=True)
class Marker:
    """One stated answer: where its marker starts (the last wins), what follows it, and whether
    it visibly ended (closed braces, or a line that a newline ends)."""

    start: int
    kind: str
    segment: str
    complete: bool


class Checker(Protocol):
    name: str

    def extract(self, text: str | None, choices: list[dict] | None = None, *,
                truncated: bool = False) -> str | None:
        """The model's final answer in canonical form, or None if it gave none.

        ``truncated``: the text hit its token budget; only a complete marker counts."""

    def equivalent(self, pred: str, gold: str) -> bool:
        """Whether an extracted answer matches the ground truth."""


def check(checker: Checker, text: str | None, gold: str, choices: list[dict] | None = None,
          *, truncated: bool = False) -> CheckResult:
    """Extract + compare, never raising on model output."""
    try:
        pred = checker.extract(text, choices, truncated=truncated) if text else None
    except Exception:  # a parser bug on odd text must not lose the row
        pred = None
    if pred is None:
        return CheckResult(None, False, 0)
    try:
        right = checker.equivalent(pred, gold)
    except Exception:
        right = False
    return CheckResult(pred, True, int(right))


def markers(text: str, kinds: tuple[str, ...], *, truncated: bool) -> list[Marker]:
    """The answer markers of the given kinds in text order. In a truncated text only complete
    ones count, and none at all when the text was cut inside a marker after the last complete
    one: the model was stating (or revising to) an answer we cannot read."""
    found: list[Marker] = []
    for kind in kinds:
        if kind in LINE_MARKERS:
            found += _line_markers(text, LINE_MARKERS[kind], kind)
    if "boxed" in kinds:
        found += [Marker(b.start, "boxed", b.content, b.closed)
                  for b in boxed_answers(text, include_open=truncated)]
    found.sort(key=lambda m: m.start)
    if not truncated:
        return found
    return [] if found and not found[-1].complete else found


def final_answer_segment(text: str, *, truncated: bool = False) -> str | None:
    """What follows the last "Final Answer:" marker (that line), else None."""
    found = markers(text, ("final",), truncated=truncated)
    return found[-1].segment if found else None


def _line_markers(text: str, pattern: re.Pattern[str], kind: str) -> list[Marker]:
    out = []
    for match in pattern.finditer(text):
        segment, complete = _line_after(text, match.end())
        if segment:
            out.append(Marker(match.start(), kind, segment, complete))
    return out


def _line_after(text: str, start: int) -> tuple[str, bool]:
    """The rest of the line from ``start``, or the next non-blank line when that is empty
    ("### Final Answer" as a heading); and whether a newline ends it."""
    while start <= len(text):
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.strip(" \t\r*_"):
            return line.strip(), end >= 0
        if end < 0:
            break
        start = end + 1
    return "", False
