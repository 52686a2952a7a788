"""Scores of an instance map (ids = levels) against the truth, in millimetres: per vertebra Dice and ASSD,
detection precision and recall, identification rate, merged neighbours, and the level Dice.

Each true vertebra is matched to the predicted instance that overlaps it best (whatever that instance's level);
it is found when their Dice exceeds 0.5 and no other true vertebra has a higher Dice with that instance, identified
when it is found and the instance carries its level. A predicted instance is a true positive when it is the found
match of some true vertebra. A merge is a predicted
instance holding more than half of two or more true vertebrae. Surface distances come from `spine_keras.surface`.

The level Dice scores the map as a semantic one with one class per level (L1..L5 as five classes): the Dice of a
true vertebra with the predicted voxels of its own level, whichever instance overlaps it. A vertebra found but
named one level off scores its match's Dice and a level Dice near 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spine_keras.levels import level_name
from spine_keras.surface import class_metrics

FOUND_DICE = 0.5
SUMMARY_KEYS = (
    "mean_dice", "mean_assd_mm", "precision", "recall", "identification", "merged", "mean_level_dice", "truths",
    "predicted",
)  # fmt: skip


def _overlaps(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxel counts of every (truth id, predicted id) pair, and of each id on its own."""
    size = int(max(pred.max(initial=0), truth.max(initial=0))) + 1
    joint = np.bincount(truth.reshape(-1).astype(np.intp) * size + pred.reshape(-1), minlength=size * size)
    joint = joint.reshape(size, size)
    return joint, joint.sum(axis=1), joint.sum(axis=0)


def match_vertebrae(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> list[dict]:
    """One row per true vertebra: its level, the best-overlapping predicted level, Dice, ASSD (mm; None when
    missed), found, identified, and the level Dice (with the predicted voxels of its own level)."""
    pred, truth = np.asarray(pred, dtype=np.intp), np.asarray(truth, dtype=np.intp)
    joint, truth_sizes, pred_sizes = _overlaps(pred, truth)
    rows = []
    for level in (int(i) for i in np.flatnonzero(truth_sizes) if i != 0):
        overlap = joint[level].copy()
        overlap[0] = 0
        dice = 2 * overlap / np.maximum(truth_sizes[level] + pred_sizes, 1)
        best = int(np.argmax(dice))
        found = bool(overlap[best] > 0 and dice[best] > FOUND_DICE)
        assd = class_metrics(pred == best, truth == level, spacing)["assd_mm"] if overlap[best] else math.nan
        rows.append(
            {
                "level": level_name(level),
                "matched_level": level_name(best) if overlap[best] else None,
                "dice": round(float(dice[best]), 4),
                "assd_mm": None if math.isnan(assd) else round(float(assd), 3),
                "found": found,
                "identified": found and best == level,
                "level_dice": round(float(2 * joint[level, level] / (truth_sizes[level] + pred_sizes[level])), 4),
            }
        )
    return _one_to_one(rows)


def _one_to_one(rows: list[dict]) -> list[dict]:
    """A predicted instance finds one true vertebra at most (the one it overlaps with the highest Dice, the
    upper one on a tie): a merged pair of vertebrae counts as one found, not two."""
    best: dict[str, dict] = {}
    for row in rows:
        claimed = best.get(row["matched_level"])
        if row["found"] and (claimed is None or row["dice"] > claimed["dice"]):
            best[row["matched_level"]] = row
    for row in rows:
        if row["found"] and best[row["matched_level"]] is not row:
            row["found"] = row["identified"] = False
    return rows


def merged_instances(pred: np.ndarray, truth: np.ndarray) -> int:
    """How many predicted instances each hold more than half of two or more true vertebrae."""
    joint, truth_sizes, _ = _overlaps(np.asarray(pred, dtype=np.intp), np.asarray(truth, dtype=np.intp))
    majority = joint[1:, 1:] > truth_sizes[1:, None] / 2
    return int(np.count_nonzero(majority.sum(axis=0) >= 2))


def instance_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict:
    """{"vertebrae": per-vertebra rows, "summary": mean Dice (missed count 0), mean ASSD of the found, precision,
    recall, identification rate, merged instances, mean level Dice and the two counts}. Rates with nothing to count
    are None."""
    rows = match_vertebrae(pred, truth, spacing)
    predicted = int(np.count_nonzero(np.bincount(np.asarray(pred).reshape(-1).astype(np.intp))[1:]))
    found = [r for r in rows if r["found"]]
    true_positive = len({r["matched_level"] for r in found})
    assd = [r["assd_mm"] for r in found if r["assd_mm"] is not None]
    summary = {
        "mean_dice": _mean([r["dice"] for r in rows]),
        "mean_assd_mm": _mean(assd),
        "precision": _rate(true_positive, predicted),
        "recall": _rate(len(found), len(rows)),
        "identification": _rate(sum(r["identified"] for r in rows), len(rows)),
        "merged": merged_instances(pred, truth),
        "mean_level_dice": _mean([r["level_dice"] for r in rows]),
        "truths": len(rows),
        "predicted": predicted,
    }
    return {"vertebrae": rows, "summary": summary}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None
