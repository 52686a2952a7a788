"""The ignore label (255): label map rules, the rows above the top label, and its exclusion from the loss, the
metrics, the cube check and the prediction scores; the loss options batch Dice and CE/Dice weights."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
import tensorflow as tf

from spine_keras.cli.make_cube import main as make_cube
from spine_keras.cli.predict import main as predict
from spine_keras.cube import read_attrs
from spine_keras.cube.check import check_cube, montage
from spine_keras.errors import CaseError, UserError
from spine_keras.io import read_volume
from spine_keras.losses import SegmentationLoss, cross_entropy, make_loss, soft_dice
from spine_keras.metrics import confusion_matrix
from spine_keras.outputs import IGNORE_COLOUR, label_overlay
from spine_keras.predict.metrics import case_scores
from spine_keras.preprocess import IGNORE, LabelMap, PreprocessConfig, ignore_above_labels
from spine_keras.surface import surface_metrics

# Two 2x3 samples, three classes; the 255 voxels are ignored.
TRUTH = np.array([[[0, 1, 255], [2, 1, 0]], [[255, 255, 2], [2, 0, 1]]], np.uint8)
PROBS = np.random.default_rng(3).dirichlet([1.0, 1.0, 1.0], size=TRUTH.shape).astype(np.float32)


def value(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def hand_ce(truth: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-sample mean of -log p(true class) over the voxels that are not ignored."""
    out = []
    for t, p in zip(truth, probs):
        valid = t != IGNORE
        out.append(-np.log(p[valid, t[valid]]).mean())
    return np.array(out)


def hand_dice(truth: np.ndarray, probs: np.ndarray, smooth: float, classes=(1, 2)) -> np.ndarray:
    """Per-sample 1 - mean soft Dice over `classes`, sums over the voxels that are not ignored."""
    out = []
    for t, p in zip(truth, probs):
        valid = t != IGNORE
        scores = []
        for c in classes:
            pc, tc = p[valid, c], (t[valid] == c).astype(float)
            scores.append((2 * (pc * tc).sum() + smooth) / (pc.sum() + tc.sum() + smooth))
        out.append(1 - np.mean(scores))
    return np.array(out)


def test_label_map_maps_ids_to_ignore_and_keeps_it_out_of_the_classes() -> None:
    spec = LabelMap.parse("1-5:1, 6-9:ignore")
    assert spec.n_classes == 2
    ids = np.array([0, 1, 5, 6, 9], np.uint16)
    np.testing.assert_array_equal(spec.apply(ids), [0, 1, 1, IGNORE, IGNORE])
    everything_else = LabelMap.parse("1-5:1,*:IGNORE")
    np.testing.assert_array_equal(everything_else.apply(np.array([0, 3, 7, 300])), [0, 1, IGNORE, IGNORE])
    assert LabelMap.parse("1:2,*:ignore").n_classes == 3
    with pytest.raises(UserError, match=r"class 255 in '6:255' is the ignore id; write '6:ignore'"):
        LabelMap.parse("6:255")
    with pytest.raises(UserError, match="above 255"):
        LabelMap.parse("6:300")
    with pytest.raises(UserError, match="cannot read rule '6:skip'"):
        LabelMap.parse("6:skip")


def test_identity_map_passes_the_ignore_id_and_refuses_other_ids() -> None:
    label = np.array([0, 1, 2, IGNORE], np.uint8)
    np.testing.assert_array_equal(LabelMap.parse(None).apply(label, 3), label)
    with pytest.raises(CaseError, match=r"label ids \[7\] are outside the 3 classes"):
        LabelMap.parse(None).apply(np.array([0, 7, IGNORE], np.uint8), 3)


def test_ignore_above_labels_marks_exactly_the_rows_above_the_first_class() -> None:
    label = np.zeros((6, 3), np.uint8)
    label[3, 1] = 2
    label[1, 0] = IGNORE  # an ignored voxel is not a label: the first labelled row stays 3
    label[5, 2] = 1
    out = ignore_above_labels(label)
    expected = label.copy()
    expected[:3] = IGNORE
    np.testing.assert_array_equal(out, expected)
    assert label[0, 0] == 0  # the input is not changed
    across = label.copy()
    across[:, 0] = IGNORE  # along axis 1 the first column holding a class is column 1
    np.testing.assert_array_equal(ignore_above_labels(label, axis=1), across)
    empty = np.zeros((4, 4), np.uint8)
    np.testing.assert_array_equal(ignore_above_labels(empty), empty)  # nothing labelled: nothing to anchor on


def test_preprocess_config_round_trips_the_flag() -> None:
    config = PreprocessConfig(ignore_above_labels=True)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert PreprocessConfig.from_dict({"normalization": "zscore"}).ignore_above_labels is False
    with pytest.raises(UserError, match="ignore_above_labels must be true or false, not 'yes'"):
        PreprocessConfig(ignore_above_labels="yes")


def test_cross_entropy_and_dice_use_the_valid_voxels_only() -> None:
    np.testing.assert_allclose(value(cross_entropy(TRUTH, PROBS)), hand_ce(TRUTH, PROBS), rtol=1e-5)
    for smooth in (0.0, 1.0):
        found = value(soft_dice(TRUTH, PROBS, include_background=False, smooth=smooth))
        np.testing.assert_allclose(found, hand_dice(TRUTH, PROBS, smooth), rtol=1e-5)
    all_ignored = np.full_like(TRUTH, IGNORE)
    np.testing.assert_allclose(value(cross_entropy(all_ignored, PROBS)), [0.0, 0.0])


def test_prediction_inside_the_ignore_region_changes_neither_loss_nor_gradient() -> None:
    loss = SegmentationLoss("ce+dice", include_background=True, from_logits=True)
    logits = np.log(PROBS)
    changed = logits.copy()
    changed[TRUTH == IGNORE] = [9.0, -4.0, 2.0]  # any prediction where the truth is ignored

    def loss_and_gradient(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        variable = tf.Variable(values)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(loss.call(TRUTH, variable))
        return value(loss.call(TRUTH, variable)), value(tape.gradient(total, variable))

    base_loss, base_grad = loss_and_gradient(logits)
    new_loss, new_grad = loss_and_gradient(changed)
    np.testing.assert_allclose(new_loss, base_loss, rtol=1e-6)
    np.testing.assert_allclose(new_grad, base_grad, atol=1e-7)
    assert np.all(base_grad[TRUTH == IGNORE] == 0) and np.abs(base_grad[TRUTH != IGNORE]).sum() > 0


def test_batch_dice_is_the_dice_of_the_concatenated_batch() -> None:
    joined_truth = np.concatenate(list(TRUTH), axis=0)[None]  # the two samples as one 4x3 sample
    joined_probs = np.concatenate(list(PROBS), axis=0)[None]
    one = value(soft_dice(joined_truth, joined_probs, include_background=False))
    batch = value(soft_dice(TRUTH, PROBS, include_background=False, batch_dice=True))
    assert batch.shape == (2,)
    np.testing.assert_allclose(batch, [one[0], one[0]], rtol=1e-6)
    per_sample = value(soft_dice(TRUTH, PROBS, include_background=False))
    assert not np.allclose(per_sample, batch)


def test_ce_and_dice_weights_scale_their_parts_and_are_saved() -> None:
    ce, dice = value(cross_entropy(TRUTH, PROBS)), value(soft_dice(TRUTH, PROBS, include_background=False))
    loss = SegmentationLoss("ce+dice", ce_weight=0.25, dice_weight=3.0)
    np.testing.assert_allclose(value(loss.call(TRUTH, PROBS)), 0.25 * ce + 3.0 * dice, rtol=1e-5)
    restored = SegmentationLoss.from_config(SegmentationLoss("dice", batch_dice=True, dice_weight=2.0).get_config())
    assert (restored.batch_dice, restored.ce_weight, restored.dice_weight) == (True, 1.0, 2.0)
    wrapped = make_loss("ce+dice", 2, batch_dice=True, ce_weight=0.5, dice_weight=1.5)
    assert (wrapped.base.batch_dice, wrapped.base.ce_weight, wrapped.base.dice_weight) == (True, 0.5, 1.5)
    with pytest.raises(ValueError, match="ce_weight must be a finite number >= 0"):
        SegmentationLoss("ce", ce_weight=-1.0)
    with pytest.raises(ValueError, match="dice_weight"):
        SegmentationLoss("dice", dice_weight=math.nan)


def test_confusion_matrix_and_surface_scores_skip_ignored_voxels() -> None:
    truth = np.array([[0, 1, 1, IGNORE, IGNORE, 0]])
    pred = np.array([[0, 1, 0, 1, 0, 1]])
    counts = np.asarray(confusion_matrix(truth, pred, 2))
    np.testing.assert_array_equal(counts, [[1, 1], [1, 1]])  # the two ignored voxels count nowhere
    elsewhere = pred.copy()
    elsewhere[truth == IGNORE] = [0, 1]  # another prediction inside the ignored region
    first, second = case_scores("a", pred[0], truth[0], 2), case_scores("b", elsewhere[0], truth[0], 2)
    np.testing.assert_allclose(first.dice, [0.5, 0.5])
    np.testing.assert_allclose(second.dice, first.dice)
    np.testing.assert_allclose(second.hd95_mm, first.hd95_mm)


def test_surface_distances_treat_the_ignored_region_as_background() -> None:
    truth = np.zeros((12, 10), np.uint8)
    truth[6:10, 3:7] = 1
    truth[:4] = IGNORE
    pred = np.zeros_like(truth)
    pred[6:10, 3:7] = 1
    pred[0:3, 2:5] = 1  # a false positive far away, but inside the ignored rows
    found = surface_metrics(pred, truth, (1.0, 2.0), 2)
    assert found[1]["dice"] == 1.0 and found[1]["hd95_mm"] == 0.0 and found[1]["predicted_voxels"] == 16
    assert found[0]["truth_voxels"] == found[0]["predicted_voxels"] == 120 - 40 - 16


def test_label_overlay_draws_ignored_voxels_in_grey() -> None:
    from matplotlib.colors import to_rgb

    overlay = label_overlay(np.array([[0, 1, IGNORE]]), alpha=0.5)
    np.testing.assert_allclose(overlay[0, 2], [*to_rgb(IGNORE_COLOUR), 0.5])
    assert overlay[0, 0, 3] == 0.0 and not np.allclose(overlay[0, 1, :3], overlay[0, 2, :3])


def test_cube_with_ignore_above_labels_holds_255_exactly_above_the_first_labelled_row(pair_list, tmp_path) -> None:
    list_path = pair_list(1)  # (40, 32, 12) volumes: the labelled boxes start at row 10 of axis 0
    cube = tmp_path / "c.h5"
    flags = ["--shape", "40,32", "--label-map", "1-2:1", "--ignore-above-labels", "--augment", "1", "--seed", "2"]
    assert make_cube([str(list_path), "-o", str(cube), "--quiet", "--workers", "1", *flags]) == 0
    with h5py.File(cube) as handle:
        labels, augmented = handle["labels"][:], handle["augmented"][:]
    originals = labels[augmented == 0]
    assert originals.shape == (12, 40, 32)
    assert np.all(originals[:, :10] == IGNORE) and not np.any(originals[:, 10:] == IGNORE)
    assert np.any(labels[augmented == 1] == IGNORE)  # the ignore id survives augmentation (nearest neighbour)
    assert set(np.unique(labels)) == {0, 1, IGNORE}
    attrs = read_attrs(cube)
    assert attrs["n_classes"] == 2 and attrs["preprocess"]["ignore_above_labels"] is True
    report = check_cube(cube)
    assert report.ok, report.problems
    assert report.ignored_voxels == int(np.count_nonzero(labels == IGNORE))
    assert f"ignored voxels (id 255): {report.ignored_voxels}" in report.summary()
    assert montage(cube, tmp_path / "montage.png", rows=2, copies=1).stat().st_size > 0


def test_check_cube_still_refuses_other_out_of_range_ids(make_training_cube, tmp_path) -> None:
    cube = make_training_cube(tmp_path / "c.h5", cases=2, per_case=2, copies=0)
    with h5py.File(cube, "r+") as handle:
        label = handle["labels"][0]
        label[0, :3] = IGNORE
        label[1, :2] = 7
        handle["labels"][0] = label
    report = check_cube(cube)
    assert report.ignored_voxels == 3
    assert report.problems == ["2 label voxels hold ids >= n_classes (3) other than the ignore id 255: [7]"]


def test_prediction_scores_skip_the_rows_above_the_labels(make_pair, write_bundle, constant_model, tmp_path) -> None:
    """A model trained with ignore_above_labels that says "vertebra" everywhere: its Dice counts only the rows from
    the top label down, so the false positives above it cost nothing."""
    run = write_bundle(
        tmp_path / "run",
        constant_model((16, 16, 1), [0.0, 3.0]),
        "2d",
        PreprocessConfig(ignore_above_labels=True),
        label_map="1-2:1",
        class_names=["background", "vertebra"],
    )
    image, label = make_pair(tmp_path, "case", shape=(20, 18, 7), spacing=(1.5, 1.0, 2.0))
    assert predict([str(run), str(image), "--label", str(label), "-o", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "metrics.csv", newline="") as handle:
        found = {(r["case"], r["class"]): r for r in csv.DictReader(handle)}
    array = read_volume(label).array
    first = 20 // 4  # make_pair's first labelled row along axis 0
    scored = array[first:]
    foreground = np.count_nonzero(scored)
    dice = float(found[("case", "vertebra")]["dice"])
    assert dice == pytest.approx(2 * foreground / (scored.size + foreground), abs=1e-6)
    assert dice > 2 * foreground / (array.size + foreground) + 0.01  # what scoring every row would give
    truth = ignore_above_labels((array > 0).astype(np.uint8))
    expected = surface_metrics(np.ones_like(truth), truth, (1.5, 1.0, 2.0), 2)[1]
    assert float(found[("case", "vertebra")]["hd95_mm"]) == pytest.approx(expected["hd95_mm"], abs=1e-6)
