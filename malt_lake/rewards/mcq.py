"""Multiple choice (CommonsenseQA): the chosen letter, or the option text the model wrote.

A letter is an uppercase one ("B", "(B)", "B) text", "option B"), or a lowercase one only in an
unambiguous form ("(b)", "b)", a segment that is just "b"): in "the answer is a library" the
"a" is an article, and the answer is the option whose text is "library".
"""

from __future__ import annotations

import re

from malt_lake.rewards.base import markers

UPPER_LEAD_RE = re.compile(r"^\(?([A-Z])\)?(?=[):,]|\.(?:\s|$)|\s|$)")  # "B", "(B)", "B) x"
LOWER_LEAD_RE = re.compile(r"^(?:\(([a-z])\)|([a-z])\)|([a-z])[.:]?$)")  # "(b)", "b)", "b"
PAREN_LETTER_RE = re.compile(r"\(([A-Za-z])\)")                        # "I pick (b) library"
OPTION_RE = re.compile(r"\b(?i:option|choice)(?:\s+(?i:is))?\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])")
TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s")
COMPLETE_KINDS = ("final", "hashes_letter", "boxed")
ALL_KINDS = (*COMPLETE_KINDS, "answer_is")


class ChoiceChecker:
    name = "mcq"

    def extract(self, text: str | None, choices: list[dict] | None = None, *,
                truncated: bool = False) -> str | None:
        if not text:
            return None
        labels = [c["label"] for c in choices] if choices else [chr(65 + i) for i in range(5)]
        kinds = COMPLETE_KINDS if truncated else ALL_KINDS  # "the answer is" may be mid-thought
        for marker in reversed(markers(text, kinds, truncated=truncated)):
            found = _resolve(marker.segment, labels, choices)
            if found:
                return found
        if truncated or not text.strip():  # no option text from the body of a cut text
            return None
        return _resolve(text.strip().splitlines()[-1], labels, choices)

    def equivalent(self, pred: str, gold: str) -> bool:
        return pred.strip().upper() == gold.strip().upper()


def _resolve(segment: str, labels: list[str], choices: list[dict] | None) -> str | None:
    """The label a segment names: by letter first, else by option text."""
    segment = _clean(segment)
    return _letter(segment, labels, choices) or _option_text(segment, choices)


def _clean(segment: str) -> str:
    segment = TEXT_RE.sub(r"\1", segment)
    return segment.strip().strip("*$\"'`").strip()


def _letter(segment: str, labels: list[str], choices: list[dict] | None) -> str | None:
    lead = UPPER_LEAD_RE.match(segment)
    if lead and lead[1] in labels and not _article(segment, lead, choices) \
            and not _starts_a_sentence(segment, lead, choices):
        return lead[1]
    lower = LOWER_LEAD_RE.match(segment)
    if lower:
        letter = next(g for g in lower.groups() if g is not None).upper()
        if letter in labels:
            return letter
    for pattern in (PAREN_LETTER_RE, OPTION_RE):
        for match in pattern.finditer(segment):
            if match[1].upper() in labels:
                return match[1].upper()
    return None


def _starts_a_sentence(segment: str, lead: re.Match[str], choices: list[dict] | None) -> bool:
    """"A good place to look" or "I think": a bare capital followed by a lowercase word is the
    start of a sentence, unless that word begins the letter's own option text ("B library")."""
    rest = segment[lead.end():]
    if lead[0] != lead[1] or not rest[:1].isspace() or not rest.strip()[:1].islower():
        return False
    own = next((c["text"].strip().lower() for c in choices or [] if c["label"] == lead[1]), "")
    return not (own and rest.strip().lower().startswith(own))


def _article(segment: str, lead: re.Match[str], choices: list[dict] | None) -> bool:
    """In "A library" a bare leading "A" before the text of another option is an article."""
    if lead[0] != "A" or not segment[lead.end():lead.end() + 1].isspace():
        return False
    named = _option_text(segment[lead.end():], choices)
    return named is not None and named != "A"


def _option_text(segment: str, choices: list[dict] | None) -> str | None:
    """The option whose text the segment's first sentence names first (a text inside a longer
    named one, "bank" in "river bank", does not count); two options with one text = None."""
    if not choices:
        return None
    lowered = SENTENCE_END_RE.split(segment.lower(), maxsplit=1)[0]
    spans = []
    for choice in choices:
        option = choice["text"].strip().lower()
        hit = re.search(rf"\b{re.escape(option)}\b", lowered) if option else None
        if hit:
            spans.append((hit.start(), hit.end(), choice["label"]))
    spans = [s for s in spans
             if not any(o[0] <= s[0] and s[1] <= o[1] and o[:2] != s[:2] for o in spans)]
    if not spans:
        return None
    first = min(s[0] for s in spans)
    labels = {s[2] for s in spans if s[0] == first}
    return labels.pop() if len(labels) == 1 else None
