"""Training callbacks: validation IoU/Dice into the logs, best checkpoint, one summary line, resumable state."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from spine_keras.bundle import write_json
from spine_keras.destinations import disk_errors
from spine_keras.io import atomic_path
from spine_keras.metrics import metric_key, summarize
from spine_keras.train.loop import TrainingDiverged
from spine_keras.train.preflight import STATE_NAME
from spine_keras.train.settings import MONITOR

__all__ = ["MONITOR", "STATE_NAME", "BestCheckpoint", "EpochSummary", "RunState", "ValidationIoU", "read_state"]


class ValidationIoU(keras.callbacks.Callback):
    """At each epoch end, one pass over the validation split: confusion matrix -> IoU/Dice into `logs`.

    Put it first in the callback list so History, CSVLogger, TensorBoard, checkpoints and early stopping
    all see `val_loss`, `val_iou_<class>`, `val_dice_<class>`, `val_miou`, `val_miou_nobg`.
    """

    def __init__(self, evaluate: Callable[[], tuple[np.ndarray, float]], class_names: Sequence[str]):
        super().__init__()
        self.evaluate, self.class_names = evaluate, list(class_names)
        self.confusion: np.ndarray | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Evaluate and add the validation values to `logs`."""
        self.confusion, val_loss = self.evaluate()
        if not math.isfinite(val_loss):
            raise TrainingDiverged(f"training diverged: validation loss is {val_loss} after epoch {epoch + 1}")
        if logs is not None:
            logs["val_loss"] = val_loss
            logs.update(summarize(self.confusion, self.class_names))


class BestCheckpoint(keras.callbacks.Callback):
    """Save `best.keras`, the run's model (and call `on_best`), when `val_miou_nobg` improves (NaN never beats a
    number), or after every epoch with `keep="last"`, so that it then holds the last epoch."""

    def __init__(
        self,
        folder: Path,
        on_best: Callable[[int, dict[str, Any]], None],
        monitor: str = MONITOR,
        keep: str = "best",
    ):
        super().__init__()
        self.folder, self.on_best, self.monitor, self.keep = Path(folder), on_best, monitor, keep
        self.best = -math.inf
        self.best_epoch = -1
        self.improved = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Checkpoint on improvement."""
        value = float((logs or {}).get(self.monitor, math.nan))
        score = -math.inf if math.isnan(value) else value
        self.improved = self.keep == "last" or self.best_epoch < 0 or score > self.best
        if self.improved:
            self.best, self.best_epoch = score, epoch
            save_model(self.model, self.folder / "best.keras")
            self.on_best(epoch, dict(logs or {}))


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch: losses, mean IoUs, per-class IoU, learning rate, time, best marker."""

    def __init__(self, class_names: Sequence[str], best: BestCheckpoint, print_fn: Callable[[str], None] = print):
        super().__init__()
        self.class_names, self.best, self.print_fn = list(class_names), best, print_fn
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Start the epoch clock."""
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Print the summary line."""
        logs = logs or {}
        per_class = " ".join(f"{n}={logs.get(f'val_iou_{metric_key(n)}', math.nan):.4f}" for n in self.class_names)
        self.print_fn(
            f"epoch {epoch + 1}/{self.params.get('epochs', '?')}: loss {logs.get('loss', math.nan):.4f} "
            f"val_loss {logs.get('val_loss', math.nan):.4f} | IoU {logs.get('val_miou', math.nan):.4f} "
            f"(no bg {logs.get('val_miou_nobg', math.nan):.4f}) | {per_class} | "
            f"lr {logs.get('learning_rate', math.nan):.3g} | {time.perf_counter() - self.started:.1f} s"
            f"{' | best' if self.best.improved and self.best.keep == 'best' else ''}"
        )


def save_model(model: keras.Model, path: Path) -> None:
    """Save a `.keras` file atomically, so a killed run never leaves a truncated checkpoint; a full disk is a
    UserError naming the checkpoint (Keras' own error does not)."""
    with disk_errors(path, "checkpoint"), atomic_path(path) as tmp:
        model.save(tmp)


class RunState(keras.callbacks.Callback):
    """After every epoch write `last.keras` and `state.json`: what `--resume` needs to go on where it stopped."""

    def __init__(
        self,
        folder: Path,
        best: BestCheckpoint,
        stateful: Sequence[keras.callbacks.Callback],
        extra: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.folder, self.best, self.stateful, self.extra = Path(folder), best, list(stateful), dict(extra or {})
        self.epochs_done = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Checkpoint the model (with optimizer) and the callbacks' counters."""
        self.epochs_done = epoch + 1
        save_model(self.model, self.folder / "last.keras")
        with disk_errors(self.folder / STATE_NAME, "run state"):
            write_json({"epoch": self.epochs_done, "completed": False, **self.snapshot()}, self.folder / STATE_NAME)

    def mark_failed(self, reason: str) -> None:
        """Record in state.json why the run stopped; the last good epoch stays resumable (nothing when none ended).
        Best effort: on a full disk the state keeps its last epoch, unmarked, and the disk error is what is reported."""
        state = read_state(self.folder)
        if state is not None:
            with contextlib.suppress(OSError):
                write_json({**state, "completed": False, "failed": reason}, self.folder / STATE_NAME)

    def snapshot(self) -> dict[str, Any]:
        """Best checkpoint, early-stopping / plateau counters and the extra entries (the split), JSON-able."""
        callbacks = {
            type(cb).__name__: {
                k: _plain(getattr(cb, k)) for k in ("wait", "best", "cooldown_counter") if hasattr(cb, k)
            }
            for cb in self.stateful
        }
        return {
            **self.extra,
            "best": _plain(self.best.best),
            "best_epoch": self.best.best_epoch,
            "callbacks": callbacks,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Put saved counters back (call after on_train_begin, which resets them)."""
        self.best.best, self.best.best_epoch = float(state["best"]), int(state["best_epoch"])
        for cb in self.stateful:
            for key, value in state["callbacks"].get(type(cb).__name__, {}).items():
                setattr(cb, key, float(value) if key == "best" else int(value))


def _plain(value: Any) -> Any:
    """Numbers as plain floats/ints, infinities as strings JSON accepts back through float()."""
    value = float(value) if isinstance(value, (float, np.floating)) else value
    return str(value) if isinstance(value, float) and math.isinf(value) else value


def read_state(folder: Path) -> dict[str, Any] | None:
    """The saved state of a bundle folder, or None when it never finished an epoch."""
    path = Path(folder) / STATE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
