"""Confidence intervals for the held-out comparison: a paired cluster bootstrap.

The unit of evaluation is a cell (seed, question): every system answered the same question
under the same seed, so a difference between two systems is taken cell by cell (paired).
Cells of one question are correlated (a hard question is hard under every seed), so the
bootstrap resamples questions, each drawn question bringing all of its seeds' cells: the
spread of those cells is then in every resample as observed. Resampling the seeds again
inside each drawn question would count that spread twice and widen the interval (its
coverage on the simulations of ``tests/test_stats.py`` goes to ~97-98 % for a nominal 95 %);
resampling cells alone would ignore the clustering and narrow it. The interval is the
percentile interval of the resampled means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from malt_lake import schemas
from malt_lake.errors import LakeError

# (system, baseline): the paper's claims, each without and with majority vote
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("MALT", "MA"), ("MALT", "SA"), ("MALT+MV", "MA+MV"), ("MALT+MV", "SA+MV"))
LEVEL = 0.95
RESAMPLES = 10_000
_CHUNK_CELLS = 4_000_000  # drawn questions per vectorized batch of resamples


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval and what it was computed over."""

    mean: float
    low: float
    high: float
    questions: int
    cells: int

    @property
    def verdict(self) -> str:
        """How a difference reads: its sign when the interval excludes 0, else noise."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "within noise"


def correctness(cells: pa.Table) -> dict[str, np.ndarray]:
    """Per system, the (questions x seeds) matrix of its correctness (0/1), NaN where the seed
    did not evaluate the question; every matrix has the same rows (questions, sorted) and
    columns (seeds, sorted). ``cells`` has columns seed, question_id, system, correct (one
    row per cell and system); it is read once."""
    rows = cells.select(["seed", "question_id", "system", "correct"]).to_pylist()
    seed_at = {s: i for i, s in enumerate(sorted({r["seed"] for r in rows}))}
    question_at = {q: i for i, q in enumerate(sorted({r["question_id"] for r in rows}))}
    matrices: dict[str, np.ndarray] = {}
    for r in rows:
        matrix = matrices.get(r["system"])
        if matrix is None:
            matrix = matrices[r["system"]] = np.full((len(question_at), len(seed_at)), np.nan)
        matrix[question_at[r["question_id"]], seed_at[r["seed"]]] = float(bool(r["correct"]))
    return matrices


def paired_difference(matrices: dict[str, np.ndarray], system: str,
                      baseline: str | None = None) -> np.ndarray:
    """``system``'s correctness matrix, or its cell-by-cell difference to ``baseline``'s
    (-1/0/1); refuses a system without predictions and cells only one of the two answered."""
    for name in (system, baseline):
        if name is not None and (name not in matrices or np.isnan(matrices[name]).all()):
            raise LakeError(f"no predictions of system {name!r} to compare")
    if baseline is None:
        return matrices[system]
    unpaired = np.isnan(matrices[system]) != np.isnan(matrices[baseline])
    if unpaired.any():
        raise LakeError(f"{int(unpaired.sum())} (seed, question) cells have a prediction of "
                        f"only one of {system!r} and {baseline!r}: the comparison must be "
                        "paired (re-run the evaluation)")
    return matrices[system] - matrices[baseline]


def cell_matrix(cells: pa.Table, system: str, baseline: str | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """``paired_difference`` straight from ``cells``, with the questions of its rows."""
    questions = sorted(set(cells.column("question_id").to_pylist()))
    return paired_difference(correctness(cells), system, baseline), questions


def bootstrap(matrix: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> Interval:
    """Mean of the matrix's cells and its cluster bootstrap percentile interval: questions
    (rows) drawn with replacement, each with all of its evaluated (non-NaN) cells; a
    resample's mean is over the cells it drew."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    present = ~np.isnan(matrix)
    keep = present.any(axis=1)
    matrix, present = matrix[keep], present[keep]
    n_questions = matrix.shape[0]
    if n_questions == 0:
        raise LakeError("no evaluated cells to bootstrap")
    sums = np.where(present, matrix, 0.0).sum(axis=1)
    counts = present.sum(axis=1)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    per_batch = max(1, _CHUNK_CELLS // n_questions)
    for start in range(0, resamples, per_batch):
        size = min(per_batch, resamples - start)
        drawn = rng.integers(0, n_questions, size=(size, n_questions))
        means[start:start + size] = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(mean=float(matrix[present].mean()), low=float(low), high=float(high),
                    questions=n_questions, cells=int(counts.sum()))


def system_intervals(cells: pa.Table, resamples: int = RESAMPLES, seed: int = 0
                     ) -> dict[str, Interval]:
    """Each system's accuracy with its interval."""
    matrices = correctness(cells)
    return {name: bootstrap(paired_difference(matrices, name), resamples, seed)
            for name in sorted(matrices)}


def comparison_pairs(systems: Sequence[str]) -> list[tuple[str, str]]:
    """The paper's pairs, then every other trained system (an ablation) against the
    untrained multi-agent baseline, voted against voted."""
    pairs = list(COMPARISONS)
    for system in systems:
        if system.startswith("MALT(") and not system.endswith("+MV"):
            pairs += [(system, "MA"), (f"{system}+MV", "MA+MV")]
    return pairs


def comparisons(cells: pa.Table, pairs: Sequence[tuple[str, str]] | None = None,
                resamples: int = RESAMPLES, seed: int = 0) -> pa.Table:
    """One row per (system, baseline) pair present in ``cells`` (default: ``comparison_pairs``
    of its systems): the mean paired difference in accuracy, its interval and a verdict
    (better / worse / within noise)."""
    matrices = correctness(cells)
    pairs = comparison_pairs(sorted(matrices)) if pairs is None else pairs
    rows = []
    dataset = cells.column("dataset")[0].as_py() if cells.num_rows else None
    for system, baseline in pairs:
        if system not in matrices or baseline not in matrices:
            continue
        interval = bootstrap(paired_difference(matrices, system, baseline), resamples, seed)
        rows.append({"dataset": dataset, "system": system, "baseline": baseline,
                     "difference": interval.mean, "ci_low": interval.low,
                     "ci_high": interval.high, "level": LEVEL, "questions": interval.questions,
                     "cells": interval.cells, "resamples": resamples,
                     "verdict": interval.verdict})
    return pa.Table.from_pylist(rows, schema=schemas.EVAL_COMPARISONS)
