"""Per-class Dice, IoU, HD95 and ASSD (mm) of predicted label maps against ground truth, per case and overall, as
table and CSV."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spine_keras import outputs

COLUMNS = ("case", "class", "dice", "iou", "hd95_mm", "assd_mm")
OVERALL = "mean"
POOLED = "all voxels"


@dataclasses.dataclass
class CaseScores:
    """Dice and IoU per class of one case (NaN where a class is in neither prediction nor truth), the confusion
    matrix they come from, and the 95th-percentile Hausdorff and average symmetric surface distances in mm (NaN
    where the class is missing from the prediction or the truth; undefined for the pooled row)."""

    case_id: str
    dice: list[float]
    iou: list[float]
    confusion: np.ndarray
    hd95_mm: list[float]
    assd_mm: list[float]


def _scores(case_id: str, confusion: np.ndarray, hd95_mm: list[float], assd_mm: list[float]) -> CaseScores:
    from spine_keras.metrics import dice_per_class, iou_per_class  # imports Keras: only once there is a score

    dice, iou = dice_per_class(confusion).tolist(), iou_per_class(confusion).tolist()
    return CaseScores(case_id, dice, iou, confusion, hd95_mm, assd_mm)


def case_scores(
    case_id: str, predicted: np.ndarray, truth: np.ndarray, n_classes: int, spacing: Sequence[float] | None = None
) -> CaseScores:
    """Dice = 2|P∩T|/(|P|+|T|) and IoU = |P∩T|/|P∪T| for every class id in 0..n_classes-1, with HD95 and ASSD
    in mm for voxels of `spacing` (None: 1 mm). Voxels whose truth is the ignore id (255) count in none of them."""
    from spine_keras.metrics import confusion_matrix
    from spine_keras.surface import surface_metrics  # scipy: only once there is a score

    counts = confusion_matrix(np.asarray(truth)[None], np.asarray(predicted)[None], n_classes)
    surfaces = surface_metrics(predicted, truth, spacing, n_classes)
    hd95, assd = ([surfaces[c][key] for c in range(n_classes)] for key in ("hd95_mm", "assd_mm"))
    return _scores(case_id, np.asarray(counts, dtype=np.int64), hd95, assd)


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
        [mean([s.hd95_mm[c] for s in scores]) for c in range(n)],
        [mean([s.assd_mm[c] for s in scores]) for c in range(n)],
    )


def pooled(scores: Sequence[CaseScores]) -> CaseScores:
    """The paper's definition: IoU and Dice from the confusion matrix summed over every case's voxels (surface
    distances are per case: NaN here)."""
    undefined = [math.nan] * len(scores[0].dice)
    return _scores(POOLED, sum(s.confusion for s in scores), undefined, undefined)


def rows(scores: Sequence[CaseScores], class_names: Sequence[str]) -> list[tuple[str, str, float, float, float, float]]:
    """(case, class, dice, iou, hd95_mm, assd_mm) for every case, then the mean over cases and the pooled values."""
    every = list(scores) + ([overall(scores), pooled(scores)] if scores else [])
    return [
        (s.case_id, name, s.dice[c], s.iou[c], s.hd95_mm[c], s.assd_mm[c])
        for s in every
        for c, name in enumerate(class_names)
    ]


def format_table(scores: Sequence[CaseScores], class_names: Sequence[str]) -> str:
    """A fixed-width text table of `rows`."""
    table = rows(scores, class_names)
    width = max([len("case")] + [len(r[0]) for r in table])
    cwidth = max([len("class")] + [len(r[1]) for r in table])
    head = "".join(f"  {key:>8}" for key in COLUMNS[2:])
    lines = [f"{'case':<{width}}  {'class':<{cwidth}}{head}"]
    for case, name, *values in table:
        lines.append(f"{case:<{width}}  {name:<{cwidth}}" + "".join(f"  {v:8.4f}" for v in values))
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def write_scores_csv(scores: Sequence[CaseScores], class_names: Sequence[str], path: Path | str) -> Path:
    """Write `rows` as CSV (`COLUMNS`; empty where undefined), atomically."""
    table = [[case, name, *(_cell(v) for v in values)] for case, name, *values in rows(scores, class_names)]
    return outputs.write_csv(table, list(COLUMNS), path)
