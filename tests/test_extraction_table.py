"""A hand-written table of model outputs as small chat models (SmolLM2, Qwen) write them: a
chain of thought, then a final line. Each row: what the checker must extract and the reward.

``truncated`` rows hit the token budget (finish_reason "length"): only a complete marker (a
closed ``\\boxed{}``, a "Final Answer:" / "####" line ended by a newline) counts there.
"""

from __future__ import annotations

import pytest

from malt_lake.rewards import checker_for
from malt_lake.rewards.base import check


def row(row_id: str, family: str, text: str, gold: str, pred: str | None, reward: int, *,
        choices: list[dict] | None = None, truncated: bool = False):
    return pytest.param(family, text, gold, choices, truncated, pred, reward, id=row_id)


def options(*texts: str) -> list[dict]:
    return [{"label": chr(65 + i), "text": t} for i, t in enumerate(texts)]


BOOKS = options("bank", "library", "school", "book store", "classroom")
SANCTIONS = options("ignore", "enforce", "authoritarian", "yell at", "avoid")
CHOKER = options("jewelry store", "neck", "jewlery box", "jewelry box", "boutique")
FISH = options("bank", "river bank", "aquarium", "desert", "sky")
MAPS = options("united states", "mexico", "countryside", "atlas", "oceans")

NUMERIC = [
    row("gsm8k-plain", "numeric",
        "Natalia sold 48 clips in April.\nIn May she sold half as many: 48 / 2 = 24 clips.\n"
        "Altogether she sold 48 + 24 = 72 clips.\nFinal Answer: 72", "72", "72", 1),
    row("answer-first-equation", "numeric",
        "She has 6 + 12 marbles.\nFinal Answer: 18 = 6 + 12", "18", "18", 1),
    row("paren-remark", "numeric",
        "Janet has 6 red marbles and 12 blue marbles.\nIn total she has 6 + 12 = 18 marbles."
        "\nFinal Answer: 18 (6 + 12)", "18", "18", 1),
    row("units-then-number", "numeric",
        "Sam saves $9 each week.\nIn 2 weeks he saves 9 * 2 = 18 dollars.\n"
        "Final Answer: 18 dollars for 2 weeks", "18", "18", 1),
    row("explanation-decimal", "numeric",
        "The bus ride takes 3 * 15 = 45 minutes.\nFinal Answer: 45 minutes (that is 0.75 hours)",
        "45", "45", 1),
    row("answer-then-clause", "numeric",
        "Each box holds 12 cupcakes and she bakes 3 boxes, so 12 * 3 = 36.\n"
        "Final Answer: 36 cupcakes, which is 3 dozen", "36", "36", 1),
    row("equation-in-marker", "numeric",
        "Step 1: 3 + 4 = 7.\nFinal Answer: 3 + 4 = 7", "7", "7", 1),
    row("times-equation", "numeric",
        "She makes 12 cupcakes per tray.\nFinal Answer: 12 × 3 = 36 cupcakes", "36", "36", 1),
    row("percent-of-equation", "numeric",
        "Half of the 36 students are girls.\nFinal Answer: 50% of 36 = 18 girls", "18", "18", 1),
    row("paren-then-equals", "numeric",
        "Final Answer: (6 + 12) = 18", "18", "18", 1),
    row("variable-equals", "numeric",
        "Let x be the number of apples. Then 2x + 3 = 13, so 2x = 10.\nFinal Answer: x = 5",
        "5", "5", 1),
    row("words-then-number", "numeric",
        "Tom starts with 5 apples and buys 6 more.\n5 + 6 = 11\nFinal Answer: Tom has 11 apples.",
        "11", "11", 1),
    row("trailing-zero", "numeric",
        "The average is 21 / 3 = 7.0\nFinal Answer: 7.0", "7", "7", 1),
    row("wrong-answer", "numeric",
        "He reads 8 pages a day for 2 days: 8 * 2 = 16.\nFinal Answer: 16", "18", "16", 0),
    row("negative", "numeric",
        "It was 5 degrees and the temperature fell by 13 degrees: 5 - 13 = -8.\n"
        "Final Answer: -8", "-8", "-8", 1),
    row("unicode-minus", "numeric",
        "The change in her balance is 20 − 28 = −8.\nFinal Answer: −8", "-8", "-8", 1),
    row("negative-money", "numeric",
        "She spent $25 but only had $20, so her balance is 20 - 25 = -5 dollars.\n"
        "Final Answer: -$5", "-5", "-5", 1),
    row("sign-wrong", "numeric",
        "The difference is 3.\nFinal Answer: -3", "3", "-3", 0),
    row("commas-dollar", "numeric",
        "The laptop costs $1,000 and the case $234, so $1,000 + $234 = $1,234.\n"
        "Final Answer: $1,234", "1234", "1234", 1),
    row("commas-decimals", "numeric",
        "Total: 1,200.25 + 34.25 = 1,234.50\nFinal Answer: $1,234.50", "1234.5", "1234.5", 1),
    row("latex-dollar-comma", "numeric",
        "The total cost is \\(\\$1{,}000 + \\$234 = \\$1{,}234\\).\n"
        "Final Answer: \\$1{,}234", "1234", "1234", 1),
    row("exact-not-close", "numeric",
        "The city had 1,400,000 people and gained 50,001: 1,400,000 + 50,001 = 1,450,001.\n"
        "Final Answer: 1,450,001", "1450000", "1450001", 0),
    row("fraction-equals-decimal", "numeric",
        "Half of the pizza is left, so the fraction is 1/2.\nFinal Answer: 1/2", "0.5", "0.5", 1),
    row("latex-frac", "numeric",
        "She ate 1 of the 4 slices, so \\(1 - \\frac{1}{4} = \\frac{3}{4}\\) is left.\n"
        "Final Answer: \\frac{3}{4}", "0.75", "0.75", 1),
    row("mixed-number", "numeric",
        "Each batch needs 1/2 cup, and she makes 5 batches: 5 * 1/2 = 2 1/2.\n"
        "Final Answer: 2 1/2 cups", "2.5", "2.5", 1),
    row("decimal-money", "numeric",
        "Two sandwiches at $6.25 each cost 2 * 6.25 = $12.50.\nFinal Answer: $12.50",
        "12.5", "12.5", 1),
    row("percent", "numeric",
        "The discount is 15 / 60 = 0.25, which is 25%.\nFinal Answer: 25%", "25", "25", 1),
    row("latex-percent", "numeric",
        "So the tip is \\(25\\%\\) of the bill.\nFinal Answer: 25\\%", "25", "25", 1),
    row("bold-number", "numeric",
        "Maria has 20 - 2 = 18 stickers.\n\nFinal answer: **18**", "18", "18", 1),
    row("heading-next-line", "numeric",
        "The farmer had 15 cows and bought 8: 15 + 8 = 23.\n\n### Final Answer\n"
        "The farmer has 23 cows.", "23", "23", 1),
    row("repeated-markers", "numeric",
        "He buys 4 packs of 5 pencils: 4 * 5 = 20.\nFinal Answer: 20\n\n"
        "Wait, I forgot the 4 pencils he already had. 20 + 4 = 24.\nFinal Answer: 24",
        "24", "24", 1),
    row("boxed-after-marker", "numeric",
        "Final Answer: 20 pencils.\n\nHmm, adding the 4 he had: \\(20 + 4 = \\boxed{24}\\)",
        "24", "24", 1),
    row("qwen-boxed-inline", "numeric",
        "To find the total, we multiply:\n\n\\[\n12 \\times 3 = 36\n\\]\n\n"
        "Therefore, the total number of cupcakes is \\(\\boxed{36}\\).", "36", "36", 1),
    row("qwen-heading-boxed", "numeric",
        "1. Each shelf holds 25 books.\n2. There are 6 shelves, so 25 * 6 = 150.\n\n"
        "**Final Answer**\n\\[\n\\boxed{150}\n\\]", "150", "150", 1),
    row("boxed-units", "numeric",
        "The total is \\(\\boxed{18 \\text{ dollars}}\\).", "18", "18", 1),
    row("final-answer-is", "numeric",
        "She has 6 + 12 = 18 marbles.\nThe final answer is 18.", "18", "18", 1),
    row("final-answer-is-boxed", "numeric",
        "So 7 * 6 = 42.\nThe final answer is $\\boxed{42}$.", "42", "42", 1),
    row("gsm8k-hashes", "numeric",
        "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips in all.\n#### 72",
        "72", "72", 1),
    row("markdown-step-headings", "numeric",
        "#### Step 1: Cost of the apples\n3 apples cost 3 * $2 = $6.\n\n"
        "#### Step 2: Add the bananas\n$6 + $4 = $10.\n\nThe total cost is $10.", "10", "10", 1),
    row("prose-final-answer", "numeric",
        "To get the final answer, we need 2 steps.\nStep 1: 4 * 5 = 20.\n"
        "Step 2: 20 - 2 = 18.\nSo Maria has 18 stickers left.", "18", "18", 1),
    row("no-marker-last-number", "numeric",
        "She picks 5 apples and then 3 more, so she has 5 + 3 = 8 apples.", "8", "8", 1),
    row("no-marker-dollars", "numeric", "so the total is $1,234.00.", "1234", "1234", 1),
    row("speed-units", "numeric",
        "Distance over time: 120 / 2 = 60.\nFinal Answer: 60 km/h", "60", "60", 1),
    row("no-number", "numeric", "I do not know how to solve this problem.", "3", None, 0),
    row("trunc-no-marker", "numeric",
        "Let's break this down step by step.\n\n1. The farmer has 15 cows and buys 8 more, so "
        "15 + 8 = 23 cows.\n2. Each cow gives 4 liters a day, so 23 * 4 = 92 liters.\n"
        "3. He sells each liter for $2, so he earns 92 * 2 =", "184", None, 0, truncated=True),
    row("trunc-marker-line-complete", "numeric",
        "48 + 24 = 72\nFinal Answer: 72\n\nLet me double-check: 48 / 2 = 24 and 48 + 24 = 72. "
        "Yes, the answer is", "72", "72", 1, truncated=True),
    row("trunc-marker-cut-mid-number", "numeric",
        "The store sells 12 boxes of 10 pens, so 12 * 10 = 120 pens.\nFinal Answer: 1",
        "120", None, 0, truncated=True),
    row("trunc-boxed-closed", "numeric",
        "There are 5 rows of 7 chairs, so the answer is \\boxed{35}.\n\nTo verify, 5 * 7 = 35 "
        "and", "35", "35", 1, truncated=True),
    row("trunc-boxed-open", "numeric",
        "There are 12 boxes of 10 pens.\nTherefore, the total is \\boxed{12", "120", None, 0,
        truncated=True),
    row("trunc-repetition-loop", "numeric",
        "6 + 12 = 18\nFinal Answer: 18\nFinal Answer: 18\nFinal Answer: 18\nFinal Ans",
        "18", "18", 1, truncated=True),
    row("trunc-hashes-complete", "numeric",
        "48 + 24 = 72 clips.\n#### 72\n\nQuestion: Weng earns $12 an hour", "72", "72", 1,
        truncated=True),
    row("trunc-hashes-at-end", "numeric",
        "48 + 24 = 72 clips.\n#### 7", "72", None, 0, truncated=True),
    row("trunc-heading-then-cut", "numeric",
        "So the answer is 42.\n\n**Final Answer:**\n42", "42", None, 0, truncated=True),
]

MATH = [
    row("math-boxed-inline", "math",
        "If 5 or more grapes were left, each kid could get one more. So at most "
        "$\\boxed{4}$ grapes are thrown out.", "4", "4", 1),
    row("math-frac", "math",
        "Simplifying, $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.", "\\frac12", "\\frac{1}{2}", 1),
    row("math-decimal-vs-frac", "math",
        "The probability is $3/6$, so the answer is $\\boxed{0.5}$.", "\\frac{1}{2}", "0.5", 1),
    row("math-nested-braces", "math",
        "The height is $\\frac{\\sqrt{3}}{2}$ times the side, so "
        "$\\boxed{\\dfrac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}",
        "\\dfrac{\\sqrt{3}}{2}", 1),
    row("math-polynomial", "math",
        "Expanding, we get $(x+1)^2 = \\boxed{x^2+2x+1}$.", "(x+1)^2", "x^2+2x+1", 1),
    row("math-interval", "math",
        "The inequality holds for all $x \\le 2$, so the solution set is "
        "$\\boxed{(-\\infty, 2]}$.", "(-\\infty,2]", "(-\\infty, 2]", 1),
    row("math-repeated-boxes", "math",
        "At first I get $\\boxed{3}$. Wait, I dropped a sign: $2x = 10$, so $x = 5$.\n\n"
        "The answer is $\\boxed{5}$.", "5", "5", 1),
    row("math-qwen-display", "math",
        "Adding the two counts, $4 + 6 = 10$.\n\nThus, the final answer is:\n\\[\n\\boxed{10}\n\\]",
        "10", "10", 1),
    row("math-fbox", "math", "Hence $n = \\fbox{7}$.", "7", "7", 1),
    row("math-wrong", "math", "So $x = \\boxed{3}$.", "4", "3", 0),
    row("math-minerva-final", "math",
        "Of the 4 equally likely outcomes, 3 are wins.\n"
        "Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.",
        "\\frac{3}{4}", "\\frac{3}{4}", 1),
    row("math-final-no-box", "math",
        "The diagonal is $12\\sqrt{2}$.\nFinal Answer: $12\\sqrt{2}$", "12\\sqrt{2}",
        "12\\sqrt{2}", 1),
    row("math-no-answer", "math", "Let's compute: $2^{10} = 1024$. No box here, just words.",
        "4", None, 0),
    row("math-trunc-no-marker", "math",
        "Let's compute: $2^{10} = 1024$. Then we subtract $24$ to get", "1000", None, 0,
        truncated=True),
    # cut inside a box that revises the earlier answer: the stated answer cannot be read
    row("math-trunc-open-box", "math",
        "So $x = \\boxed{3}$.\n\nHmm, let me recheck. Actually $x = \\boxed{\\frac{7", "3", None, 0,
        truncated=True),
    row("math-trunc-closed-box-at-end", "math",
        "Counting the cases gives $\\boxed{17}$", "17", "17", 1, truncated=True),
    row("math-trunc-final-complete", "math",
        "Final Answer: $6$\n\nTo double check, we", "6", "6", 1, truncated=True),
    row("math-trunc-final-at-end", "math",
        "There are 6 ways.\nFinal Answer: $6", "6", None, 0, truncated=True),
]

MCQ = [
    row("mcq-letter", "mcq",
        "Books are borrowed from a library.\nFinal Answer: B", "B", "B", 1, choices=BOOKS),
    row("mcq-sentence-starting-with-a", "mcq",
        "Books are kept where people study.\nA good place to look.", "B", None, 0,
        choices=BOOKS),
    row("mcq-sentence-starting-with-e-g", "mcq",
        "Think of public places.\nE.g., people read there.", "B", None, 0, choices=BOOKS),
    row("mcq-article-a", "mcq",
        "People borrow books from a place that lends them. The answer is a library.", "B", "B",
        1, choices=BOOKS),
    row("mcq-article-a-final", "mcq",
        "Children learn to read at school.\nFinal Answer: a school", "B", "C", 0, choices=BOOKS),
    row("mcq-lower-paren", "mcq",
        "A library lends books for free.\nFinal Answer: (b)", "B", "B", 1, choices=BOOKS),
    row("mcq-lower-alone", "mcq",
        "A library lends books.\nFinal Answer: b", "B", "B", 1, choices=BOOKS),
    row("mcq-option-text", "mcq",
        "You can borrow books there for free.\nFinal Answer: library", "B", "B", 1, choices=BOOKS),
    row("mcq-letter-and-text", "mcq",
        "Final Answer: (B) library", "B", "B", 1, choices=BOOKS),
    row("mcq-letter-dot-text", "mcq",
        "Maps of highways used to be printed in an atlas.\nFinal Answer: D. atlas", "D", "D", 1,
        choices=MAPS),
    row("mcq-answer-is", "mcq",
        "A bank keeps money, not books.\nThe answer is B.", "B", "B", 1, choices=BOOKS),
    row("mcq-answer-colon", "mcq",
        "GPS replaced paper maps, which were collected in an atlas.\nAnswer: D", "D", "D", 1,
        choices=MAPS),
    row("mcq-correct-answer-paren", "mcq",
        "The correct answer is (D) atlas.", "D", "D", 1, choices=MAPS),
    row("mcq-bold", "mcq",
        "Let's think step by step. GPS apps replaced road maps.\n\n**Final Answer: D**", "D",
        "D", 1, choices=MAPS),
    row("mcq-bold-answer-paren", "mcq",
        "Libraries lend books.\n\n**Answer: B) library**", "B", "B", 1, choices=BOOKS),
    row("mcq-boxed", "mcq",
        "The best option is the atlas, so $\\boxed{D}$", "D", "D", 1, choices=MAPS),
    row("mcq-boxed-text", "mcq",
        "Therefore the answer is $\\boxed{\\text{D}}$.", "D", "D", 1, choices=MAPS),
    row("mcq-repeated", "mcq",
        "The answer is C.\nActually, a school does not lend books to the public; a library "
        "does.\nFinal Answer: B", "B", "B", 1, choices=BOOKS),
    row("mcq-wrong-letter", "mcq",
        "Money is kept in a bank.\nFinal Answer: A", "B", "A", 0, choices=BOOKS),
    row("mcq-wrong-text", "mcq",
        "They seemed to shout at the school.\nFinal Answer: yell at", "A", "D", 0,
        choices=SANCTIONS),
    row("mcq-ignore", "mcq",
        "The sanctions made the school's efforts look pointless, as if they were not noticed."
        "\nFinal Answer: ignore", "A", "A", 1, choices=SANCTIONS),
    row("mcq-text-longer-option", "mcq",
        "Fish live in water, so you would see one near a river bank.\nFinal Answer: river bank",
        "B", "B", 1, choices=FISH),
    row("mcq-jewelry-store", "mcq",
        "A choker not in a box or boutique could be bought at a jewelry store.\n"
        "Final Answer: jewelry store", "A", "A", 1, choices=CHOKER),
    row("mcq-no-marker-text", "mcq", "I would go to the school.", "B", "C", 0, choices=BOOKS),
    row("mcq-no-marker-option", "mcq",
        "GPS services replaced paper maps.\nOption D, atlas, is the best choice.", "D", "D", 1,
        choices=MAPS),
    row("mcq-prose-answer-is", "mcq",
        "To find what the answer is, think about where books are kept.\n"
        "Books are kept in a library.\nSo the best choice is B.", "B", "B", 1, choices=BOOKS),
    row("mcq-no-answer", "mcq", "No idea at all.", "B", None, 0, choices=BOOKS),
    row("mcq-trunc-no-marker", "mcq",
        "Let's think step by step. A library is a place where people borrow books. A bank",
        "B", None, 0, choices=BOOKS, truncated=True),
    row("mcq-trunc-answer-is-only", "mcq",
        "Let's check whether the answer is B. A library lends books, but a school also",
        "B", None, 0, choices=BOOKS, truncated=True),
    row("mcq-trunc-final-complete", "mcq",
        "Final Answer: B\n\nExplanation: A library lends", "B", "B", 1, choices=BOOKS,
        truncated=True),
    row("mcq-trunc-final-at-end", "mcq",
        "A library lends books.\nFinal Answer: B", "B", None, 0, choices=BOOKS, truncated=True),
    row("mcq-trunc-boxed", "mcq",
        "So the answer is $\\boxed{B}$.\n\nBecause a library", "B", "B", 1, choices=BOOKS,
        truncated=True),
]

TABLE = NUMERIC + MATH + MCQ


@pytest.mark.parametrize("family,text,gold,choices,truncated,pred,reward", TABLE)
def test_extraction_table(family, text, gold, choices, truncated, pred, reward):
    checker = checker_for(family)
    result = check(checker, text, gold, choices, truncated=truncated)
    assert (result.pred_answer, result.reward) == (pred, reward)
    assert result.parse_ok == (pred is not None)
    assert checker.extract(text, choices, truncated=truncated) == pred


def test_table_covers_every_family_and_truncation():
    families = {p.values[0] for p in TABLE}
    assert len(TABLE) >= 60 and families == {"numeric", "math", "mcq"}
    assert {p.values[0] for p in TABLE if p.values[4]} == families
