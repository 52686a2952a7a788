"""Losses against hand-computed values: soft Dice, cross-entropy, CE + Dice, deep supervision weighting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from spine_keras.losses import (
    DeepSupervision,
    SegmentationLoss,
    cross_entropy,
    deep_supervision_weights,
    make_loss,
    soft_dice,
)

# One 2x2 sample, two classes: truth [[0,1],[1,1]], predicted P(class 1) = [[.2,.8],[.6,1]].
TRUTH = np.array([[[0, 1], [1, 1]]], np.uint8)
P1 = np.array([[[0.2, 0.8], [0.6, 1.0]]], np.float32)
PROBS = np.stack([1 - P1, P1], axis=-1)


def value(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def test_soft_dice_by_hand():
    # class 1: |P.T| = .8+.6+1 = 2.4, |P| = 2.6, |T| = 3 -> 4.8/5.6; class 0: .8 / (1.4 + 1) -> 1.6/2.4
    d1, d0 = 4.8 / 5.6, 1.6 / 2.4
    assert value(soft_dice(TRUTH, PROBS, include_background=False, smooth=0.0)) == pytest.approx([1 - d1], abs=1e-6)
    assert value(soft_dice(TRUTH, PROBS, include_background=True, smooth=0.0)) == pytest.approx(
        [1 - (d0 + d1) / 2], abs=1e-6
    )
    assert value(soft_dice(TRUTH, PROBS, include_background=False, smooth=1.0)) == pytest.approx(
        [1 - 5.8 / 6.6], abs=1e-6
    )


def test_soft_dice_one_hot_labels_and_logits_agree():
    one_hot = np.eye(2, dtype=np.float32)[TRUTH]
    logits = np.log(np.clip(PROBS, 1e-7, 1.0))
    sparse = value(soft_dice(TRUTH, PROBS, smooth=1.0))
    assert value(soft_dice(one_hot, PROBS, smooth=1.0)) == pytest.approx(sparse, abs=1e-6)
    assert value(soft_dice(TRUTH, logits, smooth=1.0, from_logits=True)) == pytest.approx(sparse, abs=1e-5)


def test_soft_dice_absent_class_and_empty_prediction():
    three = np.concatenate([PROBS, np.zeros_like(PROBS[..., :1])], axis=-1)  # class 2: absent, never predicted
    # absent from truth and prediction: (0 + 1) / (0 + 1) = 1, so only class 1 costs anything
    assert value(soft_dice(TRUTH, three, include_background=False, smooth=1.0)) == pytest.approx(
        [1 - (5.8 / 6.6 + 1.0) / 2], abs=1e-6
    )
    empty = np.stack([np.ones_like(P1), np.zeros_like(P1)], axis=-1)  # everything predicted as background
    assert value(soft_dice(TRUTH, empty, include_background=False, smooth=1.0)) == pytest.approx([1 - 1 / 4], abs=1e-6)


def test_cross_entropy_by_hand_per_sample():
    expected = -(math.log(0.8) + math.log(0.8) + math.log(0.6) + math.log(1.0)) / 4
    both = np.concatenate([PROBS, PROBS[:, ::-1]])  # second sample: rows swapped
    truth = np.concatenate([TRUTH, TRUTH[:, ::-1]])
    assert value(cross_entropy(truth, both)) == pytest.approx([expected, expected], abs=1e-5)
    assert value(SegmentationLoss("ce+dice", smooth=1.0).call(TRUTH, PROBS)) == pytest.approx(
        [expected + 1 - 5.8 / 6.6], abs=1e-5
    )


def test_loss_reduction_divides_by_the_global_batch():
    truth, probs = np.concatenate([TRUTH] * 4), np.concatenate([PROBS] * 2 + [PROBS[..., ::-1]] * 2)
    per_sample = SegmentationLoss("dice").call(truth, probs)
    halves = [tf.nn.compute_average_loss(per_sample[i : i + 2], global_batch_size=4) for i in (0, 2)]
    assert float(sum(halves)) == pytest.approx(float(np.mean(per_sample)), abs=1e-6)
    keras_mean = SegmentationLoss("dice")(truth, probs)
    assert float(keras_mean) == pytest.approx(float(np.mean(per_sample)), abs=1e-6)


def test_deep_supervision_halves_per_level_and_wraps_any_loss():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(1) == [1.0]
    base = SegmentationLoss("ce")
    outputs = [PROBS, PROBS[..., ::-1], np.full_like(PROBS, 0.5)]
    wrapped = value(DeepSupervision(base, 3)(TRUTH, outputs))
    expected = sum(w * value(base.call(TRUTH, o)) for w, o in zip([4 / 7, 2 / 7, 1 / 7], outputs))
    assert wrapped == pytest.approx(expected, abs=1e-6)
    assert make_loss("dice", 1)(TRUTH, PROBS).shape == (1,)
    assert DeepSupervision(base, 2).compile_args()["loss_weights"] == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError):
        DeepSupervision(base, 2)(TRUTH, [PROBS])
    with pytest.raises(ValueError):
        SegmentationLoss("focal")
