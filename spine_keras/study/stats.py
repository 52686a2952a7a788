"""Is the best variant really better? A paired Wilcoxon signed-rank test of its per-case scores against each
other variant's, on the cases both have."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import stats

from spine_keras.errors import UserError

ROW_KEYS = ("variant", "vs", "n", "median_difference", "mean_difference", "statistic", "p_value", "note")


def _defined(scores: Mapping[str, float]) -> dict[str, float]:
    """The cases with a defined (not NaN) score."""
    return {case: float(value) for case, value in scores.items() if not math.isnan(float(value))}


def best_variant(scores: Mapping[str, Mapping[str, float]]) -> str:
    """The variant with the highest mean score over its cases (the first listed on a tie)."""
    means = {name: np.mean(list(values.values())) for name, values in scores.items() if values}
    if not means:
        raise UserError("no variant has a defined per-case score to compare")
    return max(means, key=lambda name: means[name])


def compare(variant: str, vs: str, best: Mapping[str, float], other: Mapping[str, float]) -> dict:
    """One row: `best - other` on their shared cases, two-sided Wilcoxon (NaN p, with a note, when it cannot run)."""
    cases = sorted(set(best) & set(other))
    differences = np.array([best[c] - other[c] for c in cases], dtype=np.float64)
    row = {"variant": variant, "vs": vs, "n": len(cases), "statistic": math.nan, "p_value": math.nan, "note": ""}
    row["median_difference"] = float(np.median(differences)) if cases else math.nan
    row["mean_difference"] = float(np.mean(differences)) if cases else math.nan
    if len(cases) < 2:
        row["note"] = f"{len(cases)} shared case(s): a test needs at least 2"
    elif not np.any(differences):
        row["note"] = "every difference is 0: no test"
    else:
        result = stats.wilcoxon(differences, alternative="two-sided")
        row["statistic"], row["p_value"] = float(result.statistic), float(result.pvalue)
    return row


def paired_wilcoxon(scores: Mapping[str, Mapping[str, float]], best: str | None = None) -> list[dict]:
    """`scores` maps variant -> {case -> score (e.g. Dice)}. Compares the best variant (highest mean, or `best`)
    against every other on the cases both have (NaN scores are left out): one row per other variant with keys
    variant, vs, n, median_difference, mean_difference (best minus other), statistic, p_value (two-sided; NaN
    when n < 2 or every difference is 0) and note (why p is NaN, else empty)."""
    defined = {name: _defined(values) for name, values in scores.items()}
    if best is None:
        best = best_variant(defined)
    elif best not in defined:
        raise UserError(f"best variant '{best}' has no scores; variants: {', '.join(defined) or 'none'}")
    rows = [compare(best, name, defined[best], values) for name, values in defined.items() if name != best]
    return [{key: row[key] for key in ROW_KEYS} for row in rows]
