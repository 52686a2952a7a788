"""Segmentation losses in pure `keras.ops`: soft Dice, cross-entropy, CE + Dice, and deep supervision.

Every loss returns one value per sample (shape `(batch,)`), never a batch mean: Keras' `Loss` reduction, or
`tf.nn.compute_average_loss(per_sample, global_batch_size)` in a distributed train step, then divides by the
GLOBAL batch, so replicas' gradients sum to the one-device gradient (a loss that averages its own replica
batch is mis-scaled by the number of replicas under MirroredStrategy).
Labels are sparse class ids `(batch, *spatial)` or one-hot `(batch, *spatial, classes)`; predictions are
probabilities (softmax) or logits with `from_logits=True`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from spine_keras.choices import LOSSES


def _one_hot(y_true: Any, y_pred: Any) -> Any:
    """Labels as float one-hot with the prediction's class count (sparse ids are expanded)."""
    n_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape):
        return ops.cast(y_true, "float32")
    return ops.one_hot(ops.cast(y_true, "int32"), n_classes, dtype="float32")


def _spatial_axes(y_pred: Any) -> list[int]:
    """Axes between batch and classes."""
    return list(range(1, len(y_pred.shape) - 1))


def soft_dice(
    y_true: Any, y_pred: Any, include_background: bool = True, smooth: float = 1.0, from_logits: bool = False
) -> Any:
    """Per-sample 1 - mean over classes of (2|P.T| + s) / (|P| + |T| + s); a class absent from both scores 1."""
    probs = ops.softmax(ops.cast(y_pred, "float32"), axis=-1) if from_logits else ops.cast(y_pred, "float32")
    truth = _one_hot(y_true, probs)
    if not include_background:
        probs, truth = probs[..., 1:], truth[..., 1:]
    axes = _spatial_axes(probs)
    intersection = ops.sum(probs * truth, axis=axes)
    denominator = ops.sum(probs, axis=axes) + ops.sum(truth, axis=axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


def cross_entropy(y_true: Any, y_pred: Any, from_logits: bool = False) -> Any:
    """Per-sample categorical cross-entropy, averaged over voxels."""
    y_pred = ops.cast(y_pred, "float32")
    if len(y_true.shape) == len(y_pred.shape):
        voxel = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), y_pred, from_logits=from_logits)
    else:
        voxel = keras.losses.sparse_categorical_crossentropy(ops.cast(y_true, "int32"), y_pred, from_logits=from_logits)
    return ops.mean(voxel, axis=list(range(1, len(voxel.shape))))


@keras.saving.register_keras_serializable(package="spine_keras")
class SegmentationLoss(keras.losses.Loss):
    """`dice`, `ce` or `ce+dice` (sum of both) as a Keras loss whose `call` gives per-sample values."""

    def __init__(
        self,
        kind: str = "ce+dice",
        include_background: bool = False,
        smooth: float = 1.0,
        from_logits: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ):
        if kind not in LOSSES:
            raise ValueError(f"loss {kind!r} is not one of {', '.join(LOSSES)}")
        super().__init__(name=name or kind.replace("+", "_"), **kwargs)
        self.kind, self.include_background = kind, include_background
        self.smooth, self.from_logits = smooth, from_logits

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample loss, shape (batch,)."""
        total = 0.0
        if "ce" in self.kind:
            total = total + cross_entropy(y_true, y_pred, self.from_logits)
        if "dice" in self.kind:
            total = total + soft_dice(y_true, y_pred, self.include_background, self.smooth, self.from_logits)
        return total

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        return {
            **super().get_config(),
            "kind": self.kind,
            "include_background": self.include_background,
            "smooth": self.smooth,
            "from_logits": self.from_logits,
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


def make_loss(kind: str, n_outputs: int = 1, include_background: bool = False, smooth: float = 1.0) -> DeepSupervision:
    """The per-sample training loss for a model with `n_outputs` outputs (1 = no deep supervision)."""
    return DeepSupervision(SegmentationLoss(kind, include_background, smooth), n_outputs)
