"""The epoch loop: distributed steps driven by a Keras `CallbackList` (progress bar, history, checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from spine_keras.errors import UserError
from spine_keras.train.schedule import applied_learning_rate
from spine_keras.train.step import Steps


class TrainingDiverged(UserError):
    """The training loss or the weights became NaN or infinite: the run failed (exit status 3), not the input."""


def check_weights(model: keras.Model, epoch: int) -> None:
    """TrainingDiverged if any weight (batch-norm statistics included) is NaN or infinite after `epoch`."""
    for weight in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(weight.value)).all():
            raise TrainingDiverged(f"training diverged: weight '{weight.path}' is not finite after epoch {epoch + 1}")


def make_evaluator(steps: Steps, iterator: Any, n_steps: int) -> Callable[[], tuple[np.ndarray, float]]:
    """A function running one validation pass: (confusion matrix int64, mean loss over real samples)."""

    def evaluate() -> tuple[np.ndarray, float]:
        matrix = np.zeros((steps.n_classes, steps.n_classes), np.int64)
        loss_sum = count = 0.0
        for _ in range(n_steps):
            step_matrix, step_loss, step_count = steps.evaluate(iterator)
            matrix += step_matrix.numpy().astype(np.int64)
            loss_sum, count = loss_sum + float(step_loss), count + float(step_count)
        return matrix, loss_sum / max(count, 1.0)

    return evaluate


def fit(
    model: keras.Model,
    steps: Steps,
    iterator: Any,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: keras.callbacks.CallbackList,
    on_begin: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Train epochs [initial_epoch, epochs) of `steps_per_epoch` global steps; returns the last epoch's logs.

    A NaN or infinite loss, or a non-finite weight at an epoch's end, raises `TrainingDiverged` before the epoch's
    callbacks run, so no checkpoint ever holds such weights. The logged `learning_rate` is the rate of the epoch's
    last step."""
    model.stop_training = False
    callbacks.on_train_begin()
    on_begin()
    logs: dict[str, Any] = {}
    for epoch in range(initial_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        total = 0.0
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            loss = float(steps.train(iterator))
            if not math.isfinite(loss):  # stop before any callback can save what this step did
                raise TrainingDiverged(f"training diverged: loss is {loss} at epoch {epoch + 1} step {step + 1}")
            total += loss
            callbacks.on_train_batch_end(step, {"loss": total / (step + 1)})
        check_weights(model, epoch)
        logs = {"loss": total / (step + 1), "learning_rate": applied_learning_rate(model.optimizer)}
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)
    return logs
