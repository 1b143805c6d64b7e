"""Paired bootstrap intervals: exact on degenerate data, honest coverage on clustered data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from malt_lake.errors import LakeError
from malt_lake.stats import bootstrap, cell_matrix, comparison_pairs, comparisons


def cells_table(correct: dict[str, np.ndarray], missing: np.ndarray | None = None) -> pa.Table:
    """eval_predictions-shaped cells from per-system (questions x seeds) 0/1 matrices;
    ``missing`` marks the cells no seed evaluated (different subsets per seed)."""
    rows = []
    for system, matrix in correct.items():
        for q, s in np.ndindex(matrix.shape):
            if missing is None or not missing[q, s]:
                rows.append({"dataset": "arith", "seed": s, "question_id": f"q{q:04d}",
                             "system": system, "correct": bool(matrix[q, s])})
    return pa.Table.from_pylist(rows)


def test_identical_systems_differ_by_exactly_zero():
    rng = np.random.default_rng(1)
    same = rng.random((40, 3)) < 0.5
    table = comparisons(cells_table({"MALT": same, "MA": same}), [("MALT", "MA")], 2000)
    row = table.to_pylist()[0]
    assert (row["difference"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
    assert row["verdict"] == "within noise" and row["cells"] == 120 and row["questions"] == 40


def test_a_system_right_wherever_the_baseline_is_wrong_is_better_by_one():
    ones, zeros = np.ones((30, 3), bool), np.zeros((30, 3), bool)
    row = comparisons(cells_table({"MALT": ones, "MA": zeros}), [("MALT", "MA")],
                      500).to_pylist()[0]
    assert (row["difference"], row["ci_low"], row["ci_high"], row["verdict"]) == (
        1.0, 1.0, 1.0, "better")
    worse = comparisons(cells_table({"MALT": zeros, "MA": ones}), [("MALT", "MA")],
                        500).to_pylist()[0]
    assert worse["verdict"] == "worse" and worse["ci_high"] == -1.0


def simulated_difference(rng: np.random.Generator, questions: int, seeds: int,
                         effect: float) -> np.ndarray:
    """Paired differences with a strong question effect: on a random half of the questions
    the system flips the baseline's answer the same way under every seed (a hard question is
    hard under every seed), so cells of one question are far from independent. The expected
    difference is ``effect``."""
    helped = rng.random(questions) < 0.5
    base = np.where(helped, 0.5 + effect, -0.5 + effect)[:, None]
    noise = rng.random((questions, seeds)) < 0.1  # a few cells go the other way
    return np.where(noise, -np.sign(base), np.sign(base)) * 1.0


def test_interval_covers_the_true_difference_on_clustered_data():
    """Nominal 95 %: over 200 simulated studies the interval must cover the true mean
    difference about 95 % of the time. Resampling cells alone (ignoring that a question's
    cells move together) covers far less on this data; the check below fails for it."""
    rng = np.random.default_rng(7)
    studies, covered, naive_covered = 200, 0, 0
    for study in range(studies):
        matrix = simulated_difference(rng, questions=60, seeds=3, effect=0.0)
        # the true expected difference per cell: E[sign] = P(helped)*(0.8) + P(not)*(-0.8) = 0
        interval = bootstrap(matrix, resamples=400, seed=study)
        covered += interval.low <= 0.0 <= interval.high
        cells = matrix.reshape(-1, 1)  # every cell its own "question": no clustering
        naive = bootstrap(cells, resamples=400, seed=study)
        naive_covered += naive.low <= 0.0 <= naive.high
    assert 0.90 <= covered / studies <= 0.99
    assert naive_covered / studies < 0.85  # the clustering matters on this data


def seed_noise_difference(rng: np.random.Generator, questions: int, seeds: int) -> np.ndarray:
    """Paired differences dominated by seed noise: each cell is +1, -1 or 0 on its own draw,
    with a small question effect on the odds."""
    effect = rng.normal(0, 0.05, questions)[:, None]
    plus, minus = np.clip(0.2 + effect, 0, 1), np.clip(0.2 - effect, 0, 1)
    draw = rng.random((questions, seeds))
    return np.where(draw < plus, 1.0, np.where(draw < plus + minus, -1.0, 0.0))


def test_interval_width_is_the_sampling_error_of_the_mean_not_more():
    """With equal cells per question the mean's standard error is the spread of the question
    means over sqrt(questions), and a 95 % interval is about +-1.96 of it. Drawing each
    question's seeds again inside the bootstrap would count the seed noise twice: about 30 %
    wider here, which this check refuses."""
    matrix = seed_noise_difference(np.random.default_rng(21), 400, 3)
    interval = bootstrap(matrix, resamples=4000)
    standard_error = matrix.mean(axis=1).std(ddof=1) / np.sqrt(400)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * standard_error, rel=0.08)


def test_seeds_with_different_question_subsets_use_only_the_evaluated_cells():
    rng = np.random.default_rng(3)
    malt, ma = rng.random((20, 3)) < 0.6, rng.random((20, 3)) < 0.4
    missing = rng.random((20, 3)) < 0.3
    missing[0] = [False, True, True]  # one question evaluated by seed 0 alone
    matrix, _ = cell_matrix(cells_table({"MALT": malt, "MA": ma}, missing), "MALT", "MA")
    expected = (malt.astype(float) - ma)[~missing].mean()
    interval = bootstrap(matrix, resamples=300)
    assert interval.mean == pytest.approx(expected)
    assert interval.cells == int((~missing).sum()) and interval.questions == 20
    assert interval.low <= interval.mean <= interval.high


def test_same_seed_same_interval_and_unpaired_cells_are_refused():
    rng = np.random.default_rng(5)
    table = cells_table({"MALT": rng.random((25, 3)) < 0.5, "MA": rng.random((25, 3)) < 0.5})
    assert comparisons(table, [("MALT", "MA")], 300) == comparisons(table, [("MALT", "MA")],
                                                                     300)
    unpaired = table.filter(pa.compute.invert(pa.compute.and_(
        pa.compute.equal(table["system"], "MA"), pa.compute.equal(table["question_id"],
                                                                  "q0003"))))
    with pytest.raises(LakeError, match="only one of"):
        comparisons(unpaired, [("MALT", "MA")], 100)


def test_ablations_are_compared_with_the_untrained_multi_agent_baseline():
    systems = ["SA", "SA+MV", "MA", "MA+MV", "MALT", "MALT+MV", "MALT(G)", "MALT(G)+MV"]
    assert comparison_pairs(systems)[4:] == [("MALT(G)", "MA"), ("MALT(G)+MV", "MA+MV")]
