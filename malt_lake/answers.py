"""Pure text helpers for final answers, shared by dataset loading and reward checking."""

from __future__ import annotations

import re
from typing import NamedTuple


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 2``), brace-matched.

    Mirrors Hendrycks' ``last_boxed_only_string`` + ``remove_boxed``; None when there is none
    or the braces never close.
    """
    if not text:
        return None
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    command = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
    rest = text[start + len(command):]
    if rest.startswith(" "):
        return rest[1:].split("$", 1)[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:index]
    return None


BOX_TOKEN_RE = re.compile(r"\\(?:boxed|fbox)(?:\{| (?=\S))|[{}]")


class Boxed(NamedTuple):
    """One ``\\boxed`` answer: where it starts, its content, and whether it visibly ended."""

    start: int
    content: str
    closed: bool


def boxed_answers(text: str, *, include_open: bool = False) -> list[Boxed]:
    """Every non-empty ``\\boxed{...}`` / ``\\fbox{...}`` whose braces close, in text order.

    One pass with a brace stack, so a degenerate output full of unclosed boxes stays linear.
    A box whose braces never close (a text cut mid-answer) is left out, or listed with
    ``closed = False`` when ``include_open`` (to tell a text cut inside a box). The brace-less form
    ``\\boxed 2`` runs to the next ``$`` or newline; it is ``closed`` only if one follows, so
    a truncated text cannot end on a half-written number that counts.
    """
    found: list[Boxed] = []
    opened: list[tuple[int, int] | None] = []  # per open brace: (box start, content start)
    for token in BOX_TOKEN_RE.finditer(text or ""):
        kind = token.group()
        if kind == "{":
            opened.append(None)
        elif kind == "}":
            box = opened.pop() if opened else None
            if box is not None:
                found.append(Boxed(box[0], text[box[1]:token.start()].strip(), True))
        elif kind.endswith("{"):
            opened.append((token.start(), token.end()))
        else:
            found.append(_spaced(text, token.start(), token.end()))
    if include_open:
        found += [Boxed(box[0], text[box[1]:].strip() or "…", False)
                  for box in opened if box is not None]
    return sorted((b for b in found if b.content), key=lambda b: b.start)


def _spaced(text: str, start: int, content_start: int) -> Boxed:
    """``\\boxed 2$``: the content up to ``$`` or a newline, closed if one of them follows."""
    ends = [i for i in (text.find("$", content_start), text.find("\n", content_start)) if i >= 0]
    end = min(ends) if ends else len(text)
    return Boxed(start, text[content_start:end].strip(), bool(ends))
