"""The learning rate over the training steps: linear warm-up, then constant, cosine or poly decay.

One serializable `LearningRateSchedule` of the optimizer's step count, so a `.keras` checkpoint carries it and
`--resume` (which restores the step count from `last.keras`) goes on with exactly the rate an uninterrupted run had.
The plateau schedule keeps a plain float rate (so ReduceLROnPlateau can lower it); its warm-up, if any, is applied
by `WarmUp`, a callback that sets that rate from the same formula before each warm-up step.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from spine_keras.train.settings import TrainSettings

WARMUP_START = 0.1  # warm-up starts at lr/10: not 0, so the first steps already move the weights
POLY_EXPONENT = 0.9  # nnU-Net's poly decay: lr (1 - t/T)^0.9
DECAYS = ("constant", "cosine", "poly")


@keras.saving.register_keras_serializable(package="spine_keras")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The rate at step t (0-based) of `total_steps` T, with W = `warmup_steps`:

    t < W: lr (0.1 + 0.9 t / W), a linear ramp from lr/10 towards lr;
    t >= W, with u = (t - W) / (T - W) clipped to [0, 1]: lr (constant), lr (1 + cos(pi u)) / 2 (cosine), or
    lr (1 - u)^0.9 (poly); both decays reach 0 at t = T, the step after the last.
    """

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0, decay: str = "constant"):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}")
        if not (lr > 0 and math.isfinite(lr)) or not 0 <= warmup_steps < total_steps:
            raise ValueError(f"need lr > 0, 0 <= warmup_steps < total_steps; got {lr}, {warmup_steps}, {total_steps}")
        self.lr, self.total_steps, self.warmup_steps, self.decay = float(lr), int(total_steps), int(warmup_steps), decay

    def __call__(self, step: Any) -> Any:
        """The rate at `step` (a scalar tensor or number), as a float32 scalar."""
        t = ops.cast(step, "float32")
        warm = self.lr * (WARMUP_START + (1 - WARMUP_START) * t / max(self.warmup_steps, 1))
        u = ops.clip((t - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0)
        if self.decay == "cosine":
            rate = 0.5 * self.lr * (1.0 + ops.cos(math.pi * u))
        elif self.decay == "poly":
            rate = self.lr * ops.power(1.0 - u, POLY_EXPONENT)
        else:
            rate = ops.full_like(u, self.lr)
        return ops.where(t < self.warmup_steps, warm, rate)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments (recorded in the optimizer's config inside every `.keras` file)."""
        return {"lr": self.lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "decay": self.decay}


def learning_rate(settings: TrainSettings, lr: float, steps_per_epoch: int) -> float | WarmupDecay:
    """What the optimizer is built with: the plain rate for the plateau schedule, else the schedule over
    `settings.epochs` x `steps_per_epoch` steps (so extending --epochs on resume stretches the decay)."""
    if settings.lr_schedule == "plateau":
        return lr
    total, warmup = settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch
    return WarmupDecay(lr, total, warmup, settings.lr_schedule)


def plateau_warmup(settings: TrainSettings, lr: float, steps_per_epoch: int) -> WarmUp | None:
    """The warm-up callback of the plateau schedule (None without warm-up or with a schedule that has its own)."""
    if settings.lr_schedule != "plateau" or not settings.warmup_epochs:
        return None
    steps = settings.warmup_epochs * steps_per_epoch
    return WarmUp(WarmupDecay(lr, settings.epochs * steps_per_epoch, steps), steps)


class WarmUp(keras.callbacks.Callback):
    """Before each of the first `steps` steps (and the one after, which restores lr), set the optimizer's float
    rate from `ramp` at its step count: the plateau schedule's warm-up. Derived from the step count alone, so a
    resumed run gets the same rates; afterwards ReduceLROnPlateau owns the rate."""

    def __init__(self, ramp: WarmupDecay, steps: int):
        super().__init__()
        self.ramp, self.steps = ramp, steps

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Set the rate of the coming step while warming up."""
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if step <= self.steps:
            self.model.optimizer.learning_rate = float(ops.convert_to_numpy(self.ramp(step)))


def applied_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimizer's last step used (a loss-scale wrapper is looked through): a schedule is evaluated at
    the step before the current count, a float rate read as it is."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = inner._learning_rate  # Keras keeps the schedule object only here; `learning_rate` evaluates it
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        step = max(int(ops.convert_to_numpy(inner.iterations)) - 1, 0)
        return float(ops.convert_to_numpy(schedule(step)))
    return float(ops.convert_to_numpy(inner.learning_rate))
