"""The paired Wilcoxon table (spine_keras.study.stats) on made-up per-case scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from spine_keras.errors import UserError
from spine_keras.study.stats import ROW_KEYS, paired_wilcoxon

CASES = [f"case{i}" for i in range(8)]
SCORES = {
    "2d-u1": dict(zip(CASES, [0.80, 0.82, 0.75, 0.90, 0.70, 0.85, 0.78, 0.88])),
    "3d-u1": dict(zip(CASES, [0.84, 0.81, 0.80, 0.93, 0.76, 0.86, 0.83, 0.90])),
    "3d-uamd": dict(zip(CASES, [0.83, 0.85, 0.74, 0.92, 0.73, 0.84, 0.80, 0.89])),
}


def test_all_positive_differences_give_the_exact_p_value():
    """n = 6, every difference positive: the signed-rank statistic (smaller rank sum) is 0, and of the 2^6 = 64
    equally likely sign patterns only 'all +' and 'all -' are as extreme: exact two-sided p = 2/64 = 0.03125."""
    better = {f"c{i}": 0.9 for i in range(6)}
    worse = {f"c{i}": 0.9 - 0.01 * (i + 1) for i in range(6)}
    (row,) = paired_wilcoxon({"a": better, "b": worse})
    assert (row["variant"], row["vs"], row["n"]) == ("a", "b", 6)
    assert row["statistic"] == 0.0 and row["p_value"] == pytest.approx(0.03125)
    assert row["median_difference"] == pytest.approx(0.035) and row["mean_difference"] == pytest.approx(0.035)


def test_best_by_mean_against_each_other_matches_scipy():
    rows = paired_wilcoxon(SCORES)
    assert [tuple(r) for r in rows] == [ROW_KEYS] * 2
    assert [(r["variant"], r["vs"]) for r in rows] == [("3d-u1", "2d-u1"), ("3d-u1", "3d-uamd")]
    for row in rows:
        differences = np.array([SCORES["3d-u1"][c] - SCORES[row["vs"]][c] for c in CASES])
        expected = stats.wilcoxon(differences)
        assert row["n"] == 8 and row["note"] == ""
        assert row["p_value"] == pytest.approx(expected.pvalue) and row["statistic"] == expected.statistic
        assert row["median_difference"] == pytest.approx(np.median(differences))
    assert rows[0]["p_value"] < 0.05 < rows[1]["p_value"]  # both lose case1, but to 3d-uamd by the most


def test_named_best_and_unshared_or_nan_cases():
    scores = {name: dict(values) for name, values in SCORES.items()}
    scores["3d-uamd"]["case0"] = math.nan  # undefined for this case: left out of the pairing
    del scores["2d-u1"]["case7"]
    scores["2d-u1"]["extra"] = 0.5  # only one variant has it
    rows = paired_wilcoxon(scores, best="3d-uamd")
    assert [(r["vs"], r["n"]) for r in rows] == [("2d-u1", 6), ("3d-u1", 7)]
    with pytest.raises(UserError, match="best variant 'nope' has no scores; variants: 2d-u1, 3d-u1, 3d-uamd"):
        paired_wilcoxon(scores, best="nope")


@pytest.mark.parametrize(
    "case, other, n, note",
    [
        ("one shared case", {"c0": 0.5}, 1, "1 shared case"),
        ("no shared case", {"x": 0.5}, 0, "0 shared case"),
        ("identical scores", {"c0": 0.9, "c1": 0.8, "c2": 0.7}, 3, "every difference is 0"),
    ],
)
def test_p_is_nan_with_a_note_when_no_test_can_run(case, other, n, note):
    (row,) = paired_wilcoxon({"best": {"c0": 0.9, "c1": 0.8, "c2": 0.7}, "other": other}, best="best")
    assert row["n"] == n and math.isnan(row["p_value"]) and math.isnan(row["statistic"]), case
    assert row["note"].startswith(note)


def test_no_scores_at_all_is_refused():
    with pytest.raises(UserError, match="no variant has a defined per-case score"):
        paired_wilcoxon({"a": {"c": math.nan}})
