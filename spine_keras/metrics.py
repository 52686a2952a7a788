"""IoU and Dice exactly as the ICPR 2020 paper defines them, from a confusion matrix over a whole data set.

IoU_c = m_cc / (t_c + m_c - m_cc), with m_cc the voxels of class c predicted as c, t_c the ground-truth
voxels of c and m_c the voxels predicted as c, all summed over every batch first (never a mean of batch
IoUs). Dice_c = 2 m_cc / (t_c + m_c). The global values average the classes present in the ground truth
(t_c > 0), with and without the background class 0. A class absent from the ground truth has IoU 0 when
it was predicted and NaN when it was not; either way it is left out of the means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int, sample_weight: Any = None) -> Any:
    """(n_classes, n_classes) int32 counts, rows = truth, columns = prediction (class ids, not probabilities).

    Voxels whose true id is not a class (the ignore id 255, `spine_keras.preprocess.IGNORE`) and samples with
    weight 0 are not counted.
    """
    y_true = ops.reshape(ops.cast(y_true, "int32"), (ops.shape(y_true)[0], -1))
    y_pred = ops.reshape(ops.cast(y_pred, "int32"), (ops.shape(y_pred)[0], -1))
    keep = ops.logical_and(y_true >= 0, y_true < n_classes)
    if sample_weight is not None:
        keep = ops.logical_and(keep, ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1)) > 0)
    flat = ops.where(keep, y_true * n_classes + y_pred, n_classes * n_classes)
    counts = ops.bincount(ops.reshape(flat, (-1,)), minlength=n_classes * n_classes + 1)
    return ops.reshape(counts[: n_classes * n_classes], (n_classes, n_classes))


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU_c = m_cc / (t_c + m_c - m_cc); NaN where the class is neither in the truth nor predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    hits, truth, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    union = truth + predicted - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / union, np.nan)


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """Dice_c = 2 m_cc / (t_c + m_c); NaN where the class is neither in the truth nor predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    hits, total = np.diag(cm), cm.sum(axis=1) + cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * hits / total, np.nan)


def present_mean(values: np.ndarray, cm: np.ndarray, background: bool = True) -> float:
    """Mean of per-class `values` over the classes present in the ground truth (optionally without class 0)."""
    present = np.asarray(cm).sum(axis=1) > 0
    if not background:
        present[0] = False
    return float(np.mean(values[present])) if present.any() else float("nan")


def metric_key(name: str) -> str:
    """A class name as a log key fragment: lower case, runs of other characters as '_'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_") or "class"


def summarize(cm: np.ndarray, class_names: Sequence[str], prefix: str = "val_") -> dict[str, float]:
    """Log values: <prefix>iou_<class>, <prefix>dice_<class>, miou, miou_nobg, mdice, mdice_nobg."""
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    logs = {f"{prefix}iou_{metric_key(n)}": float(v) for n, v in zip(class_names, iou)}
    logs.update({f"{prefix}dice_{metric_key(n)}": float(v) for n, v in zip(class_names, dice)})
    logs.update(
        {
            f"{prefix}miou": present_mean(iou, cm),
            f"{prefix}miou_nobg": present_mean(iou, cm, False),
            f"{prefix}mdice": present_mean(dice, cm),
            f"{prefix}mdice_nobg": present_mean(dice, cm, False),
        }
    )
    return logs


def class_table(cm: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class (name, IoU, Dice, truth and predicted voxels), then the two global rows."""
    cm = np.asarray(cm)
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    rows: list[dict[str, Any]] = [
        {
            "class": name,
            "iou": float(iou[c]),
            "dice": float(dice[c]),
            "truth_voxels": int(cm[c].sum()),
            "predicted_voxels": int(cm[:, c].sum()),
        }
        for c, name in enumerate(class_names)
    ]
    for label, background in (("mean without background", False), ("mean with background", True)):
        rows.append(
            {
                "class": label,
                "iou": present_mean(iou, cm, background),
                "dice": present_mean(dice, cm, background),
                "truth_voxels": "",
                "predicted_voxels": "",
            }
        )
    return rows
