"""IoU and Dice from an accumulated confusion matrix, against hand-computed values, and the callback's logs."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from spine_keras.metrics import class_table, confusion_matrix, dice_per_class, iou_per_class, metric_key, summarize
from spine_keras.train.callbacks import ValidationIoU

NAMES = ["background", "vertebra", "Disc L4/L5"]


def cm_of(truth, pred, n=3, weights=None) -> np.ndarray:
    return np.asarray(confusion_matrix(np.asarray(truth), np.asarray(pred), n, weights))


def accumulated() -> np.ndarray:
    # batch 1: truth [[0,0,1],[1,1,0]] vs prediction [[0,1,1],[1,0,0]]; class 2 absent everywhere
    first = cm_of([[[0, 0, 1], [1, 1, 0]]], [[[0, 1, 1], [1, 0, 0]]])
    # batch 2: three background voxels, one predicted as class 2 (absent from the truth)
    second = cm_of([[[0, 0, 0]]], [[[2, 0, 0]]])
    return first + second


def test_confusion_matrix_by_hand():
    assert accumulated().tolist() == [[4, 1, 1], [1, 2, 0], [0, 0, 0]]


def test_confusion_matrix_ignores_padding_and_weight_zero_samples():
    truth = np.array([[[1, 255]], [[1, 1]]])
    pred = np.array([[[1, 0]], [[0, 0]]])
    assert cm_of(truth, pred, 2, weights=np.array([1.0, 0.0])).tolist() == [[0, 0], [0, 1]]


def test_iou_and_dice_per_paper_over_the_whole_set():
    cm = accumulated()
    # t = [6, 3, 0], m = [5, 3, 1]: IoU_c = m_cc / (t_c + m_c - m_cc)
    iou = iou_per_class(cm)
    assert iou == pytest.approx([4 / 7, 2 / 4, 0.0])
    assert dice_per_class(cm) == pytest.approx([8 / 11, 4 / 6, 0.0])
    logs = summarize(cm, NAMES)
    assert logs["val_miou"] == pytest.approx((4 / 7 + 0.5) / 2)  # class 2 is not in the truth: left out
    assert logs["val_miou_nobg"] == pytest.approx(0.5)
    assert logs["val_mdice"] == pytest.approx((8 / 11 + 4 / 6) / 2)
    assert logs["val_iou_disc_l4_l5"] == 0.0 and logs["val_dice_vertebra"] == pytest.approx(4 / 6)
    batch_mean = (
        iou_per_class(cm_of([[[0, 0, 1], [1, 1, 0]]], [[[0, 1, 1], [1, 0, 0]]]))[0]
        + iou_per_class(cm_of([[[0, 0, 0]]], [[[2, 0, 0]]]))[0]
    ) / 2
    assert batch_mean == pytest.approx((0.5 + 2 / 3) / 2) and batch_mean != pytest.approx(iou[0])


def test_absent_class_not_predicted_is_nan_and_empty_prediction_scores_zero():
    cm = cm_of([[[0, 1], [1, 1]]], [[[0, 0], [0, 0]]])  # nothing predicted but background
    iou = iou_per_class(cm)
    assert iou[:2] == pytest.approx([1 / 4, 0.0]) and np.isnan(iou[2])
    logs = summarize(cm, NAMES)
    assert logs["val_miou"] == pytest.approx(1 / 8) and logs["val_miou_nobg"] == 0.0
    assert np.isnan(summarize(cm_of([[[0, 0]]], [[[0, 0]]]), NAMES)["val_miou_nobg"])


def test_class_table_rows():
    rows = class_table(accumulated(), NAMES)
    assert [r["class"] for r in rows] == NAMES + ["mean without background", "mean with background"]
    assert rows[0]["truth_voxels"] == 6 and rows[2]["predicted_voxels"] == 1
    assert rows[-2]["iou"] == pytest.approx(0.5) and metric_key(" Disc L4/L5 ") == "disc_l4_l5"


def test_callback_logs_reach_history_and_csv(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd")
    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList(
        [
            ValidationIoU(lambda: (accumulated(), 0.25), NAMES),
            keras.callbacks.CSVLogger(str(tmp_path / "h.csv")),
            keras.callbacks.TensorBoard(str(tmp_path / "tb"), write_graph=False),
            history,
        ],
        model=model,
        epochs=1,
    )
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    callbacks.on_epoch_end(0, {"loss": 1.0})
    callbacks.on_train_end()
    assert history.history["val_miou_nobg"] == [pytest.approx(0.5)]
    assert history.history["val_iou_background"] == [pytest.approx(4 / 7)]
    assert history.history["val_loss"] == [0.25]
    with open(tmp_path / "h.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["val_dice_background"]) == pytest.approx(8 / 11) and float(row["val_miou"]) == pytest.approx(
        (4 / 7 + 0.5) / 2
    )
    assert list((tmp_path / "tb" / "validation").glob("events.out.tfevents.*"))
