"""Per-class Dice and IoU of predicted label maps against ground truth, per case and overall, as table and CSV."""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spine_keras.io import atomic_path

OVERALL = "mean"


@dataclasses.dataclass
class CaseScores:
    """Dice and IoU per class of one case; NaN where a class is absent from both prediction and truth."""

    case_id: str
    dice: list[float]
    iou: list[float]


def case_scores(case_id: str, predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> CaseScores:
    """Dice = 2|P∩T|/(|P|+|T|) and IoU = |P∩T|/|P∪T| for every class id in 0..n_classes-1."""
    pred = predicted.ravel().astype(np.int64)
    true = truth.ravel().astype(np.int64)
    confusion = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    hits = np.diag(confusion).astype(np.float64)
    pred_count, true_count = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * hits / (pred_count + true_count)
        iou = hits / (pred_count + true_count - hits)
    return CaseScores(case_id, dice.tolist(), iou.tolist())


def overall(scores: Sequence[CaseScores]) -> CaseScores:
    """Mean over cases per class, skipping cases where the class is undefined (NaN)."""
    def mean(values: list[float]) -> float:
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined) if defined else math.nan

    n = len(scores[0].dice)
    return CaseScores(OVERALL, [mean([s.dice[c] for s in scores]) for c in range(n)],
                      [mean([s.iou[c] for s in scores]) for c in range(n)])


def rows(scores: Sequence[CaseScores], class_names: Sequence[str]) -> list[tuple[str, str, float, float]]:
    """(case, class, dice, iou) for every case, then the overall mean."""
    every = list(scores) + ([overall(scores)] if scores else [])
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


def write_csv(scores: Sequence[CaseScores], class_names: Sequence[str], path: Path | str) -> Path:
    """Write `rows` as CSV (case,class,dice,iou; empty where undefined), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "class", "dice", "iou"])
        for case, name, dice, iou in rows(scores, class_names):
            writer.writerow([case, name, _cell(dice), _cell(iou)])
    return path
