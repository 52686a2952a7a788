"""Per-class Dice and IoU of predicted label maps against ground truth, per case and overall, as table and CSV."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spine_keras import outputs

OVERALL = "mean"
POOLED = "all voxels"


@dataclasses.dataclass
class CaseScores:
    """Dice and IoU per class of one case (NaN where a class is in neither prediction nor truth) and the
    confusion matrix they come from."""

    case_id: str
    dice: list[float]
    iou: list[float]
    confusion: np.ndarray


def _scores(case_id: str, confusion: np.ndarray) -> CaseScores:
    from spine_keras.metrics import dice_per_class, iou_per_class  # imports Keras: only once there is a score

    return CaseScores(case_id, dice_per_class(confusion).tolist(), iou_per_class(confusion).tolist(), confusion)


def case_scores(case_id: str, predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> CaseScores:
    """Dice = 2|P∩T|/(|P|+|T|) and IoU = |P∩T|/|P∪T| for every class id in 0..n_classes-1."""
    from spine_keras.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(truth)[None], np.asarray(predicted)[None], n_classes)
    return _scores(case_id, np.asarray(counts, dtype=np.int64))


def overall(scores: Sequence[CaseScores]) -> CaseScores:
    """Mean over cases per class, skipping cases where the class is undefined (NaN)."""

    def mean(values: list[float]) -> float:
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined) if defined else math.nan

    n = len(scores[0].dice)
    return CaseScores(
        OVERALL,
        [mean([s.dice[c] for s in scores]) for c in range(n)],
        [mean([s.iou[c] for s in scores]) for c in range(n)],
        sum(s.confusion for s in scores),
    )


def pooled(scores: Sequence[CaseScores]) -> CaseScores:
    """The paper's definition: IoU and Dice from the confusion matrix summed over every case's voxels."""
    return _scores(POOLED, sum(s.confusion for s in scores))


def rows(scores: Sequence[CaseScores], class_names: Sequence[str]) -> list[tuple[str, str, float, float]]:
    """(case, class, dice, iou) for every case, then the mean over cases and the pooled values."""
    every = list(scores) + ([overall(scores), pooled(scores)] if scores else [])
    return [(s.case_id, name, s.dice[c], s.iou[c]) for s in every for c, name in enumerate(class_names)]


def format_table(scores: Sequence[CaseScores], class_names: Sequence[str]) -> str:
    """A fixed-width text table of `rows`."""
    table = rows(scores, class_names)
    width = max([len("case")] + [len(r[0]) for r in table])
    cwidth = max([len("class")] + [len(r[1]) for r in table])
    lines = [f"{'case':<{width}}  {'class':<{cwidth}}  {'dice':>7}  {'iou':>7}"]
    lines += [f"{case:<{width}}  {name:<{cwidth}}  {dice:7.4f}  {iou:7.4f}" for case, name, dice, iou in table]
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def write_scores_csv(scores: Sequence[CaseScores], class_names: Sequence[str], path: Path | str) -> Path:
    """Write `rows` as CSV (case,class,dice,iou; empty where undefined), atomically."""
    table = [[case, name, _cell(dice), _cell(iou)] for case, name, dice, iou in rows(scores, class_names)]
    return outputs.write_csv(table, ["case", "class", "dice", "iou"], path)
