"""Answer checking: gold solutions score 1 on the shared dev sets; model-like outputs parse."""

from __future__ import annotations

import json

import pytest

from malt_lake.rewards import checker_for
from malt_lake.rewards.base import check


def gold_text(name: str, row: dict) -> str:
    if name == "csqa":
        return f"After thinking it over, the answer is {row['answer']}."
    return row["solution"]


@pytest.mark.parametrize("name,family,floor", [("gsm8k", "numeric", 0.99),
                                               ("math", "math", 0.97), ("csqa", "mcq", 0.99)])
def test_gold_solutions_score_one(datasets_dir, name, family, floor):
    rows = [json.loads(x) for x in (datasets_dir / name / "dev.jsonl").read_text().splitlines()]
    checker = checker_for(family)
    results = [check(checker, gold_text(name, r), r["answer"], r.get("choices")) for r in rows]
    misses = [(r["id"], r["answer"], res.pred_answer)
              for r, res in zip(rows, results, strict=True) if res.reward != 1]
    assert 1 - len(misses) / len(rows) >= floor, misses[:20]


@pytest.mark.parametrize("text,gold,reward,pred", [
    ("Step 1: 3 + 4 = 7. Final Answer: 7", "7", 1, "7"),
    ("so the total is $1,234.00.", "1234", 1, "1234"),
    ("Final Answer: Tom has 11 apples.", "11", 1, "11"),
    ("The answer is \\boxed{42}", "42", 1, "42"),
    ("#### 72", "72", 1, "72"),
    ("Final Answer: 7.0", "7", 1, "7"),
    ("Final Answer: -3", "3", 0, "-3"),
    ("I do not know.", "3", 0, None),
    ("", "3", 0, None),
])
def test_numeric_checker(text, gold, reward, pred):
    result = check(checker_for("numeric"), text, gold)
    assert (result.reward, result.pred_answer) == (reward, pred)
    assert result.parse_ok == (pred is not None)


@pytest.mark.parametrize("text,gold,reward", [
    ("so \\boxed{\\frac{1}{2}}", "\\frac12", 1),
    ("so \\boxed{0.5}", "\\frac{1}{2}", 1),
    ("thus \\boxed{x^2+2x+1}", "(x+1)^2", 1),
    ("thus \\boxed{3}", "4", 0),
    ("no box here, just words", "4", 0),
])
def test_math_checker_uses_math_verify(text, gold, reward):
    assert check(checker_for("math"), text, gold).reward == reward


CHOICES = [{"label": "A", "text": "bank"}, {"label": "B", "text": "library"},
           {"label": "C", "text": "school"}]


@pytest.mark.parametrize("text,reward,pred", [
    ("Final Answer: B", 1, "B"),
    ("Final Answer: (B) library", 1, "B"),
    ("The answer is B.", 1, "B"),
    ("Final Answer: library", 1, "B"),
    ("I would go to the school.", 0, "C"),
    ("No idea at all.", 0, None),
])
def test_choice_checker_reads_letters_and_option_text(text, reward, pred):
    result = check(checker_for("mcq"), text, "B", CHOICES)
    assert (result.reward, result.pred_answer) == (reward, pred)


@pytest.mark.parametrize("family,text,gold,choices,truncated,pred,reward", [
    ("numeric", "6 + 12 = 18\nFinal Answer: 18 (6 + 12)", "18", None, False, "18", 1),
    ("numeric", "9 * 2 = 18\nFinal Answer: 18 dollars for 2 weeks", "18", None, False, "18", 1),
    ("numeric", "She has 6 + 12 = 18 marbles, and then", "18", None, True, None, 0),
    ("numeric", "6 + 12 = 18\nFinal Answer: 18\nTo check", "18", None, True, "18", 1),
    ("mcq", "The answer is a library", "B", CHOICES, False, "B", 1),
    ("mcq", "A library lends books, but a bank", "B", CHOICES, True, None, 0),
    # cut inside a box revising the answer: neither the old nor the new one counts
    ("math", "So $x = \\boxed{3}$.\nWait, it is $\\boxed{4", "4", None, True, None, 0),
    ("numeric", "Final Answer: 18 = 6 + 12", "18", None, False, "18", 1),
])
def test_the_answer_the_model_stated_is_read(family, text, gold, choices, truncated, pred,
                                             reward):
    result = check(checker_for(family), text, gold, choices, truncated=truncated)
    assert (result.pred_answer, result.parse_ok, result.reward) == (pred, pred is not None,
                                                                    reward)


def test_numeric_equality_is_exact():
    numeric = checker_for("numeric")
    assert not numeric.equivalent("1450001", "1450000")
    assert numeric.equivalent("7.0", "7") and numeric.equivalent("1/2", "0.5")
    assert check(numeric, "Final Answer: 1,450,001", "1450000").reward == 0
