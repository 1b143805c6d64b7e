"""Normalize one raw row from any supported layout into our question fields.

Layouts: ``normalized`` (../shared/datasets: id, question, answer, [choices, solution]),
``hf_gsm8k`` (openai/gsm8k: question, answer with ``#### N``), ``hf_math`` (problem,
solution with ``\\boxed{}``), ``hf_csqa`` (commonsense_qa: question, choices {label, text},
answerKey) and ``csqa_official`` (question: {stem, choices}, answerKey).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from malt_lake.answers import last_boxed

Choice = dict[str, str]


class RowInvalid(ValueError):
    """One field of one row is wrong; carries the field name."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Normalized:
    raw_id: str | None
    question: str
    answer: str
    choices: list[Choice] | None
    solution: str | None
    stratum: str | None = None  # subject/level where the source has them (stratified eval)


def detect_layout(row: dict[str, Any]) -> str:
    """Guess the layout from a row's fields."""
    if "answerKey" in row:
        return "csqa_official" if isinstance(row.get("question"), dict) else "hf_csqa"
    if "problem" in row and "solution" in row:
        return "hf_math"
    if "id" in row or "unique_id" in row:
        return "normalized"
    if "question" in row and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "hf_gsm8k"
    return "normalized"


def normalize(row: dict[str, Any], layout: str, family: str) -> Normalized:
    if layout == "auto":
        layout = detect_layout(row)
    handler = _HANDLERS.get(layout)
    if handler is None:
        raise RowInvalid(None, f"unknown layout {layout!r}")
    result = handler(row)
    if family == "mcq":
        _check_mcq(result)
    elif result.choices is not None:
        raise RowInvalid("choices", f"choices given, but the dataset family is {family!r}")
    return result


def _text(row: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    if field not in row or row[field] is None:
        if required:
            raise RowInvalid(field, "missing")
        return None
    value = row[field]
    if not isinstance(value, str):
        raise RowInvalid(field, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RowInvalid(field, "empty")
    return value


def _answer(row: dict[str, Any], field: str = "answer") -> str:
    value = row.get(field)
    if isinstance(value, bool) or value is None:
        raise RowInvalid(field, "missing" if value is None else "expected a string, got bool")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise RowInvalid(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RowInvalid(field, "empty")
    return value.strip()


def _row_id(row: dict[str, Any]) -> str | None:
    for field in ("id", "unique_id"):
        if field in row and row[field] is not None:
            value = row[field]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise RowInvalid(field, f"expected a string or integer, got {type(value).__name__}")
            text = str(value).strip()
            if not text:
                raise RowInvalid(field, "empty")
            return text
    return None


def _choices(value: Any, field: str = "choices") -> list[Choice]:
    if isinstance(value, dict) and isinstance(value.get("label"), list):
        labels, texts = value.get("label"), value.get("text")
        if not isinstance(texts, list) or len(texts) != len(labels):
            raise RowInvalid(field, "label and text lists differ in length")
        value = [{"label": lab, "text": txt} for lab, txt in zip(labels, texts, strict=True)]
    if not isinstance(value, list) or not value:
        raise RowInvalid(field, "expected a non-empty list of {label, text}")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str) \
                or not isinstance(item.get("text"), str):
            raise RowInvalid(field, "every choice needs string 'label' and 'text'")
        out.append({"label": item["label"].strip(), "text": item["text"]})
    return out


def _normalized(row: dict[str, Any]) -> Normalized:
    choices = _choices(row["choices"]) if row.get("choices") is not None else None
    return Normalized(_row_id(row), _text(row, "question"), _answer(row), choices,
                      _text(row, "solution", required=False),
                      _stratum(row.get("subject"), row.get("level")))


def _hf_gsm8k(row: dict[str, Any]) -> Normalized:
    full = _text(row, "answer")
    if "####" not in full:
        raise RowInvalid("answer", "no '#### <number>' final-answer line")
    final = full.rsplit("####", 1)[1].strip().replace(",", "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", final):
        raise RowInvalid("answer", f"final answer {final!r} after '####' is not a number")
    return Normalized(_row_id(row), _text(row, "question"), final, None, full)


def _hf_math(row: dict[str, Any]) -> Normalized:
    solution = _text(row, "solution")
    answer = row.get("answer")
    if answer is None:
        answer = last_boxed(solution)
        if not answer:
            raise RowInvalid("solution", "no \\boxed{...} answer in the solution")
    else:
        answer = _answer(row)
    return Normalized(_row_id(row), _text(row, "problem"), answer, None, solution,
                      _stratum(row.get("type"), row.get("level")))


def _stratum(subject: Any, level: Any) -> str | None:
    """'Algebra/Level 3' from MATH's subject (type) and level; None when neither is given."""
    parts = [str(p).strip() for p in (subject, level) if p is not None and str(p).strip()]
    if level is not None and str(level).strip().isdigit():
        parts[-1] = f"Level {str(level).strip()}"
    return "/".join(parts) or None


def _hf_csqa(row: dict[str, Any]) -> Normalized:
    return Normalized(_row_id(row), _text(row, "question"), _answer(row, "answerKey"),
                      _choices(row.get("choices"), "choices"), None)


def _csqa_official(row: dict[str, Any]) -> Normalized:
    question = row.get("question")
    if not isinstance(question, dict):
        raise RowInvalid("question", "expected an object with 'stem' and 'choices'")
    return Normalized(_row_id(row), _text(question, "stem"), _answer(row, "answerKey"),
                      _choices(question.get("choices"), "question.choices"), None)


def _check_mcq(result: Normalized) -> None:
    if result.choices is None:
        raise RowInvalid("choices", "missing (the dataset family is mcq)")
    labels = [c["label"] for c in result.choices]
    if len(set(labels)) != len(labels):
        raise RowInvalid("choices", f"repeated labels {labels}")
    if result.answer not in labels:
        raise RowInvalid("answer", f"{result.answer!r} is not one of the choice labels {labels}")


_HANDLERS = {
    "normalized": _normalized,
    "hf_gsm8k": _hf_gsm8k,
    "hf_math": _hf_math,
    "hf_csqa": _hf_csqa,
    "csqa_official": _csqa_official,
}
