"""Answer checking: extract a final answer from model text and compare it to the truth.

A registry by dataset family. A checker never raises on model output: text with no parsable
answer gets ``parse_ok = False`` and reward 0.
"""

from __future__ import annotations

from malt_lake.rewards.base import Checker, CheckResult
from malt_lake.rewards.math import MathChecker
from malt_lake.rewards.mcq import ChoiceChecker
from malt_lake.rewards.numeric import NumericChecker

CHECKERS: dict[str, Checker] = {
    "numeric": NumericChecker(),
    "math": MathChecker(),
    "mcq": ChoiceChecker(),
}


def checker_for(family: str) -> Checker:
    try:
        return CHECKERS[family]
    except KeyError:
        raise KeyError(f"no answer checker for family {family!r}; "
                       f"known: {', '.join(sorted(CHECKERS))}") from None


__all__ = ["CHECKERS", "CheckResult", "Checker", "checker_for"]
