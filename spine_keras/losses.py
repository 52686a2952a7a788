"""Segmentation losses in pure `keras.ops`: soft Dice, cross-entropy, CE + Dice, and deep supervision.

Every loss returns one value per sample (shape `(batch,)`), never a batch mean: Keras' `Loss` reduction, or
`tf.nn.compute_average_loss(per_sample, global_batch_size)` in a distributed train step, then divides by the
GLOBAL batch, so replicas' gradients sum to the one-device gradient (a loss that averages its own replica
batch is mis-scaled by the number of replicas under MirroredStrategy).
Labels are sparse class ids `(batch, *spatial)` or one-hot `(batch, *spatial, classes)`; predictions are
probabilities (softmax) or logits with `from_logits=True`. A sparse id outside [0, classes) (the ignore id 255 of
`spine_keras.preprocess.IGNORE`) marks a voxel left out: it adds nothing to the cross-entropy, which averages the
valid voxels only, nor to the Dice sums, and a prediction there has no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from spine_keras.choices import LOSSES


def _truth_and_mask(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Labels as float one-hot with the prediction's class count, and the float mask of valid voxels
    `(batch, *spatial)`: sparse ids outside [0, classes) are invalid (their one-hot rows are zero); one-hot labels
    are valid everywhere."""
    n_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape):
        truth = ops.cast(y_true, "float32")
        return truth, ops.ones_like(truth[..., 0])
    ids, valid = _valid_ids(y_true, n_classes)
    return ops.one_hot(ids, n_classes, dtype="float32") * valid[..., None], valid


def _valid_ids(y_true: Any, n_classes: int) -> tuple[Any, Any]:
    """Sparse ids with the invalid ones replaced by 0 (a safe index), and the float mask of the valid ones."""
    ids = ops.cast(y_true, "int32")
    valid = ops.logical_and(ids >= 0, ids < n_classes)
    return ops.where(valid, ids, 0), ops.cast(valid, "float32")


def _spatial_axes(y_pred: Any) -> list[int]:
    """Axes between batch and classes."""
    return list(range(1, len(y_pred.shape) - 1))


def soft_dice(
    y_true: Any,
    y_pred: Any,
    include_background: bool = True,
    smooth: float = 1.0,
    from_logits: bool = False,
    batch_dice: bool = False,
) -> Any:
    """Per-sample 1 - mean over classes of (2|P.T| + s) / (|P| + |T| + s) over the valid voxels; a class absent from
    both scores 1. With `batch_dice` the sums run over the whole batch and every sample gets that one value, so the
    batch mean is the batch's Dice loss (steadier for classes that are small or missing in single samples)."""
    probs = ops.softmax(ops.cast(y_pred, "float32"), axis=-1) if from_logits else ops.cast(y_pred, "float32")
    truth, valid = _truth_and_mask(y_true, probs)
    probs = probs * valid[..., None]
    if not include_background:
        probs, truth = probs[..., 1:], truth[..., 1:]
    axes = _spatial_axes(probs)
    intersection = ops.sum(probs * truth, axis=axes)
    denominator = ops.sum(probs, axis=axes) + ops.sum(truth, axis=axes)
    if batch_dice:  # (batch, classes) sums -> the batch's sums, repeated for every sample
        intersection = ops.sum(intersection, axis=0, keepdims=True) + ops.zeros_like(intersection)
        denominator = ops.sum(denominator, axis=0, keepdims=True) + ops.zeros_like(denominator)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


def cross_entropy(y_true: Any, y_pred: Any, from_logits: bool = False) -> Any:
    """Per-sample categorical cross-entropy, averaged over the valid voxels (0 for a sample without any)."""
    y_pred = ops.cast(y_pred, "float32")
    if len(y_true.shape) == len(y_pred.shape):
        voxel = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), y_pred, from_logits=from_logits)
        return ops.mean(voxel, axis=list(range(1, len(voxel.shape))))
    ids, valid = _valid_ids(y_true, y_pred.shape[-1])
    voxel = keras.losses.sparse_categorical_crossentropy(ids, y_pred, from_logits=from_logits) * valid
    axes = list(range(1, len(voxel.shape)))
    return ops.sum(voxel, axis=axes) / ops.maximum(ops.sum(valid, axis=axes), 1.0)


@keras.saving.register_keras_serializable(package="spine_keras")
class SegmentationLoss(keras.losses.Loss):
    """`dice`, `ce` or `ce+dice` (`ce_weight` x CE + `dice_weight` x Dice) as a Keras loss whose `call` gives
    per-sample values; `batch_dice` takes the Dice sums over the whole (replica) batch."""

    def __init__(
        self,
        kind: str = "ce+dice",
        include_background: bool = False,
        smooth: float = 1.0,
        from_logits: bool = False,
        name: str | None = None,
        *,
        batch_dice: bool = False,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        **kwargs: Any,
    ):
        if kind not in LOSSES:
            raise ValueError(f"loss {kind!r} is not one of {', '.join(LOSSES)}")
        for what, weight in (("ce_weight", ce_weight), ("dice_weight", dice_weight)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{what} must be a finite number >= 0, not {weight}")
        super().__init__(name=name or kind.replace("+", "_"), **kwargs)
        self.kind, self.include_background = kind, include_background
        self.smooth, self.from_logits = smooth, from_logits
        self.batch_dice, self.ce_weight, self.dice_weight = bool(batch_dice), float(ce_weight), float(dice_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample loss, shape (batch,)."""
        total = 0.0
        if "ce" in self.kind:
            total = total + self.ce_weight * cross_entropy(y_true, y_pred, self.from_logits)
        if "dice" in self.kind:
            dice = soft_dice(y_true, y_pred, self.include_background, self.smooth, self.from_logits, self.batch_dice)
            total = total + self.dice_weight * dice
        return total

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        return {
            **super().get_config(),
            "kind": self.kind,
            "include_background": self.include_background,
            "smooth": self.smooth,
            "from_logits": self.from_logits,
            "batch_dice": self.batch_dice,
            "ce_weight": self.ce_weight,
            "dice_weight": self.dice_weight,
        }


def deep_supervision_weights(n_outputs: int, decay: float = 0.5) -> list[float]:
    """Weights of the main output then each coarser auxiliary one: `decay` per level, normalized to sum 1."""
    raw = [decay**level for level in range(n_outputs)]
    return [w / sum(raw) for w in raw]


class DeepSupervision:
    """Wraps any per-sample loss for a model with outputs [seg, aux_1, aux_2, ...] that share one target."""

    def __init__(self, base: SegmentationLoss, n_outputs: int, decay: float = 0.5):
        self.base = base
        self.weights = deep_supervision_weights(n_outputs, decay)

    def __call__(self, y_true: Any, outputs: Sequence[Any]) -> Any:
        """Per-sample weighted sum of the base loss over the outputs."""
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outputs) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} outputs, got {len(outputs)}")
        return sum(w * self.base.call(y_true, out) for w, out in zip(self.weights, outputs))

    def compile_args(self) -> dict[str, list]:
        """`loss` and `loss_weights` for `model.compile`, when training with plain `fit`."""
        return {"loss": [self.base] * len(self.weights), "loss_weights": list(self.weights)}


def make_loss(
    kind: str,
    n_outputs: int = 1,
    include_background: bool = False,
    smooth: float = 1.0,
    *,
    batch_dice: bool = False,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> DeepSupervision:
    """The per-sample training loss for a model with `n_outputs` outputs (1 = no deep supervision)."""
    base = SegmentationLoss(
        kind, include_background, smooth, batch_dice=batch_dice, ce_weight=ce_weight, dice_weight=dice_weight
    )
    return DeepSupervision(base, n_outputs)
