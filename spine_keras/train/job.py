"""One training job: one arch on one split, written as a complete bundle folder (resumable)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from spine_keras.augment import AugmentConfig
from spine_keras.bundle import ModelBundle, Provenance, file_sha256, read_bundle, versions, write_json
from spine_keras.data import CubeInfo, CubeReader, Split, read_failures, train_dataset, val_dataset, val_steps
from spine_keras.destinations import disk_errors
from spine_keras.errors import UserError
from spine_keras.losses import make_loss
from spine_keras.models import build_model, preset
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import PreprocessConfig
from spine_keras.train.callbacks import (
    MONITOR,
    STATE_NAME,
    BestCheckpoint,
    EpochSummary,
    RunState,
    ValidationIoU,
    read_state,
)
from spine_keras.train.loop import TrainingDiverged, fit, make_evaluator
from spine_keras.train.preflight import cube_identity
from spine_keras.train.reports import plot_history, write_class_table
from spine_keras.train.schedule import WarmupDecay, learning_rate, plateau_warmup
from spine_keras.train.settings import TrainSettings
from spine_keras.train.step import Steps

OPTIMIZER_CLASSES = {
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "sgd": "SGD",
    "adadelta": "Adadelta",
    "adagrad": "Adagrad",
    "nadam": "Nadam",
}


@dataclass
class Context:
    """What every job of a run shares."""

    settings: TrainSettings
    cube: CubeInfo
    strategy: tf.distribute.Strategy
    batch: int
    chief: bool
    resume: bool
    augment: AugmentConfig | None
    policy: str

    @property
    def global_batch(self) -> int:
        """Per-replica batch times the replicas of all workers."""
        return self.batch * self.strategy.num_replicas_in_sync

    @property
    def verbose(self) -> int:
        """Keras verbosity of this process: the settings' on the chief, silent on other workers."""
        return self.settings.verbose if self.chief else 0

    def steps_per_epoch(self, split: Split) -> int:
        """Whole global batches of training samples per epoch, capped by --steps-per-epoch."""
        return min(len(split.train) // self.global_batch, self.settings.steps_per_epoch or len(split.train))


def make_optimizer(name: str, lr: float | WarmupDecay) -> keras.optimizers.Optimizer:
    """A Keras optimizer from its preset name (adam, rmsprop, adadelta, ...) and learning rate (or schedule)."""
    return keras.optimizers.get({"class_name": OPTIMIZER_CLASSES[name.lower()], "config": {"learning_rate": lr}})


def job_config(ctx: Context, arch: str, split: Split) -> dict[str, Any]:
    """config.json of one bundle: every setting, the preset, model and optimizer, split, strategy, cube, versions."""
    settings, arch_preset = ctx.settings, preset(arch)
    rate = learning_rate(settings, base_lr(ctx, arch), ctx.steps_per_epoch(split))
    return {
        "settings": settings.to_dict(),
        "arch": arch,
        "preset": arch_preset,
        "model_config": model_config(ctx, arch),
        "optimizer": {
            "name": settings.optimizer or arch_preset["optimizer"],
            "lr": base_lr(ctx, arch),
            "schedule": rate.get_config() if isinstance(rate, WarmupDecay) else settings.lr_schedule,
        },
        "split": split.to_dict(),
        "online_augment": ctx.augment.to_dict() if ctx.augment else None,
        "strategy": {
            "name": settings.strategy,
            "kind": type(ctx.strategy).__name__,
            "replicas": ctx.strategy.num_replicas_in_sync,
            "per_replica_batch": ctx.batch,
            "global_batch": ctx.global_batch,
            "steps_per_epoch": ctx.steps_per_epoch(split),
            "val_steps": val_steps(len(split.val), ctx.global_batch),
        },
        "precision": ctx.policy,
        "jit": settings.jit,
        "monitor": MONITOR,
        "cube": {"path": str(ctx.cube.path.resolve()), "attrs": ctx.cube.attrs, **cube_identity(ctx.cube)},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def base_lr(ctx: Context, arch: str) -> float:
    """The learning rate of `arch`: the setting, else its preset's (the peak of a schedule)."""
    return ctx.settings.lr or preset(arch)["lr"]


def model_config(ctx: Context, arch: str) -> dict[str, Any]:
    """The build_model keyword arguments of `arch` (build_model(**model_config) rebuilds it)."""
    return {
        "arch": arch,
        "input_shape": list(ctx.cube.input_shape),
        "n_classes": ctx.cube.n_classes,
        **ctx.settings.model_overrides(preset(arch)),
    }


def _metadata(ctx: Context, arch: str, split: Split, metrics: dict[str, Any]) -> ModelBundle:
    """The typed bundle (spine_keras.json) that export and prediction read."""
    attrs = ctx.cube.attrs
    provenance = Provenance(
        cube=str(ctx.cube.path.resolve()),
        cube_format=str(attrs.get("format", "")),
        cube_sha256=_cube_sha256(ctx.cube.path),
        source_list=str(attrs.get("source_list", "")),
        split=split.name,
        train_cases=tuple(split.train_cases),
        val_cases=tuple(split.val_cases),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    build = model_config(ctx, arch)
    for key in ("arch", "input_shape", "n_classes"):
        build.pop(key)
    return ModelBundle(
        arch=arch,
        input_shape=tuple(ctx.cube.input_shape),
        class_names=tuple(ctx.cube.class_names),
        preprocess=PreprocessConfig.from_dict(attrs.get("preprocess") or {}),
        sampling=SamplingConfig.from_dict(attrs.get("sampling") or {"mode": ctx.cube.mode}),
        label_map=attrs.get("label_map"),
        build=build,
        preset=preset(arch),
        provenance=provenance,
        metrics=metrics,
        train_flips=train_flips(ctx),
    )


def train_flips(ctx: Context) -> tuple[int, ...]:
    """The sample axes the model saw flipped in training (the cube's augmented copies, the online augmentation):
    what prediction's `--tta` averages over. An augmentation without `flip_axes` flips the last axis."""
    rank = len(ctx.cube.input_shape) - 1
    offline = ctx.cube.attrs.get("augment") or {}
    settings = ([offline] if offline.get("copies") else []) + ([ctx.augment.to_dict()] if ctx.augment else [])
    axes = set()
    for config in settings:
        if float(config.get("flip_prob") or 0) > 0:
            chosen = config.get("flip_axes")
            axes.update(int(a) % rank for a in ([rank - 1] if chosen is None else chosen))
    return tuple(sorted(axes))


@functools.lru_cache(maxsize=8)
def _cube_sha256(path: Path) -> str:
    """The cube's content hash, computed once per process (a cube can be gigabytes)."""
    return file_sha256(path)


def _build(ctx: Context, arch: str, split: Split, folder: Path, state: dict[str, Any] | None) -> keras.Model:
    """The compiled model (optimizer and its learning-rate schedule attached, so .keras files carry their state),
    restored when resuming."""
    config = model_config(ctx, arch)
    rate = learning_rate(ctx.settings, base_lr(ctx, arch), ctx.steps_per_epoch(split))
    optimizer = ctx.settings.optimizer or preset(arch)["optimizer"]
    keras.utils.set_random_seed(ctx.settings.seed)  # same --seed, same initial weights and dropout masks
    with ctx.strategy.scope():
        model = build_model(config.pop("arch"), config.pop("input_shape"), config.pop("n_classes"), **config)
        model.compile(optimizer=make_optimizer(optimizer, rate))
        if state is not None:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(folder / "last.keras")
    return model


def train_job(ctx: Context, arch: str, split: Split, folder: Path, write_folder: Path) -> dict[str, Any]:
    """Train `arch` on `split` into bundle `folder` (read on resume); this process writes to `write_folder`.

    Steps: read the resume state (a finished job returns its result), build the model, make the datasets and the
    callbacks, fit, then write the job's result and final state. A diverged loss or an unreadable sample stops the
    job with state.json marked failed (its last good epoch stays resumable); a full disk is one line naming it.
    """
    state = read_state(folder) if ctx.resume else None
    if state is not None and _finished(state, ctx.settings.epochs):
        return state["result"]
    with disk_errors(write_folder, "the run folder"):
        write_folder.mkdir(parents=True, exist_ok=True)
        write_json(job_config(ctx, arch, split), write_folder / "config.json")
        model = _build(ctx, arch, split, folder, state)
        reader = CubeReader(ctx.cube.path, ctx.augment, ctx.settings.seed)
        callbacks = _fit(ctx, arch, split, model, reader, state, write_folder)
        return _finish(ctx, arch, split, folder, write_folder, callbacks, int(state["epoch"]) if state else 0)


def _fit(
    ctx: Context,
    arch: str,
    split: Split,
    model: keras.Model,
    reader: CubeReader,
    state: dict[str, Any] | None,
    write_folder: Path,
) -> _JobCallbacks:
    """Make the steps, datasets and callbacks, then run the epochs; returns the callbacks for `_finish`."""
    settings = ctx.settings
    loss = make_loss(
        settings.loss,
        len(model.outputs),
        settings.dice_background,
        settings.dice_smooth,
        batch_dice=settings.dice_batch,
        ce_weight=settings.ce_weight,
        dice_weight=settings.dice_weight,
    )
    steps = Steps(ctx.strategy, model, loss, ctx.global_batch, ctx.cube.n_classes, settings.jit)
    n_steps, initial_epoch = ctx.steps_per_epoch(split), int(state["epoch"]) if state else 0
    train_iter, val_iter = _datasets(ctx, reader, split, n_steps, initial_epoch)
    evaluator = make_evaluator(steps, val_iter, val_steps(len(split.val), ctx.global_batch))
    callbacks = _callbacks(ctx, arch, split, model, evaluator, write_folder)
    if ctx.verbose:
        _announce(ctx, arch, split, n_steps)
    try:
        with read_failures(reader):
            fit(model, steps, train_iter, settings.epochs, initial_epoch, n_steps, callbacks.callback_list,
                on_begin=lambda: callbacks.run_state.restore(state) if state else None)  # fmt: skip
    except UserError as exc:
        callbacks.run_state.mark_failed(str(exc))
        raise type(exc)(_failure_line(exc, arch, split, callbacks.best)) from exc
    return callbacks


def _failure_line(exc: UserError, arch: str, split: Split, best: BestCheckpoint) -> str:
    """The error of a stopped job, naming the job, what best.keras holds and what to try."""
    kept = f"best.keras keeps epoch {best.best_epoch + 1}" if best.best_epoch >= 0 else "no epoch was saved"
    hint = "; lower --lr or check the cube with spine-check-cube" if isinstance(exc, TrainingDiverged) else ""
    return f"{exc} ({arch} {split.name}); {kept}{hint}"


def _finished(state: dict[str, Any], epochs: int) -> bool:
    """True when a resumed job already completed: it stopped early or reached the requested epochs."""
    return bool(state.get("completed") and (state["stopped_early"] or state["epoch"] >= epochs))


def _datasets(
    ctx: Context, reader: CubeReader, split: Split, n_steps: int, initial_epoch: int
) -> tuple[Iterator[Any], Iterator[Any]]:
    """Distributed iterators over the split's training (augmented, resumed at `initial_epoch`) and validation data."""
    settings = ctx.settings
    epochs = (initial_epoch, settings.epochs)
    train_iter = iter(
        ctx.strategy.distribute_datasets_from_function(
            lambda c: train_dataset(reader, split.train, ctx.batch, ctx.global_batch, n_steps, settings.seed, epochs, c)
        )
    )
    val_iter = iter(
        ctx.strategy.distribute_datasets_from_function(
            lambda c: val_dataset(reader, split.val, ctx.batch, ctx.global_batch, c)
        )
    )
    return train_iter, val_iter


@dataclass
class _JobCallbacks:
    """The job's callbacks, with the two whose state the job reads after fitting."""

    callback_list: keras.callbacks.CallbackList
    best: BestCheckpoint
    run_state: RunState


def _callbacks(
    ctx: Context,
    arch: str,
    split: Split,
    model: keras.Model,
    evaluator: Callable[[], tuple[np.ndarray, float]],
    write_folder: Path,
) -> _JobCallbacks:
    """Validation, the kept checkpoint (bundle metadata and class table), logs, plateau callbacks (and the plateau
    schedule's warm-up) and the run state."""
    settings, names = ctx.settings, ctx.cube.class_names
    validation = ValidationIoU(evaluator, names)
    best = BestCheckpoint(write_folder, _on_best(ctx, arch, split, validation, write_folder), keep=settings.keep)
    stateful = _stateful_callbacks(settings)
    warmup = plateau_warmup(settings, base_lr(ctx, arch), ctx.steps_per_epoch(split))
    run_state = RunState(write_folder, best, stateful, {"split": split.to_dict()})
    callbacks = [keras.callbacks.ProgbarLogger()] if ctx.verbose else []
    callbacks += [warmup] if warmup else []
    callbacks += [
        validation,
        best,
        EpochSummary(names, best, print if ctx.verbose else lambda _: None),
        keras.callbacks.CSVLogger(str(write_folder / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(write_folder / "logs"), write_graph=False),
        *stateful,
        run_state,
    ]
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        model=model,
        epochs=settings.epochs,
        steps=ctx.steps_per_epoch(split),
        verbose=ctx.verbose,
    )
    return _JobCallbacks(callback_list, best, run_state)


def _on_best(
    ctx: Context, arch: str, split: Split, validation: ValidationIoU, write_folder: Path
) -> Callable[[int, dict[str, Any]], None]:
    """What a kept epoch writes: the bundle metadata with its metrics, and the per-class IoU/Dice table."""
    title = f"{arch} {split.name}: validation IoU and Dice at the {ctx.settings.keep} epoch"

    def on_best(epoch: int, logs: dict[str, Any]) -> None:
        _metadata(ctx, arch, split, best_metrics(epoch, logs, ctx.settings.keep)).write(write_folder)
        write_class_table(validation.confusion, ctx.cube.class_names, write_folder, title)

    return on_best


def _announce(ctx: Context, arch: str, split: Split, n_steps: int) -> None:
    """One line naming the job, its data and its batch layout before the first epoch."""
    print(
        f"training {arch} on {split.name}: {len(split.train)} samples ({len(split.train_cases)} cases), "
        f"validating on {len(split.val)} originals ({len(split.val_cases)} cases); "
        f"{ctx.strategy.num_replicas_in_sync} replica(s) x batch {ctx.batch}, {n_steps} steps/epoch"
    )


def _finish(
    ctx: Context,
    arch: str,
    split: Split,
    folder: Path,
    write_folder: Path,
    callbacks: _JobCallbacks,
    initial_epoch: int,
) -> dict[str, Any]:
    """The job's result (best epoch and its metrics), saved with the final run state, and the history plot."""
    result = {
        "arch": arch,
        "split": split.name,
        "folder": str(folder),
        "best_epoch": callbacks.best.best_epoch,
        "metrics": read_bundle(write_folder).metrics,
    }
    done = callbacks.run_state.epochs_done or initial_epoch
    write_json(
        {
            **callbacks.run_state.snapshot(),
            "epoch": done,
            "completed": True,
            "stopped_early": done < ctx.settings.epochs,
            "result": result,
        },
        write_folder / STATE_NAME,
    )
    plot_history(write_folder / "history.csv", ctx.cube.class_names, write_folder, arch, run=folder)
    return result


def _stateful_callbacks(settings: TrainSettings) -> list[keras.callbacks.Callback]:
    """Early stopping and, with the plateau schedule, learning-rate reduction on a `val_miou_nobg` plateau
    (0 patience = off); the other schedules own the rate, so they get no reduction."""
    found: list[keras.callbacks.Callback] = []
    if settings.patience:
        found.append(
            keras.callbacks.EarlyStopping(
                MONITOR, min_delta=settings.min_delta, patience=settings.patience, mode="max", verbose=settings.verbose
            )
        )
    if settings.lr_patience and settings.lr_schedule == "plateau":
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                MONITOR,
                factor=settings.lr_factor,
                mode="max",
                patience=settings.lr_patience,
                min_lr=settings.min_lr,
                min_delta=settings.min_delta,
                verbose=settings.verbose,
            )
        )
    return found


def best_metrics(epoch: int, logs: dict[str, Any], keep: str = "best") -> dict[str, Any]:
    """The validation values of the kept epoch (the best on `monitor`, or the last), as stored in the bundle
    metadata."""
    values = {k: float(v) for k, v in logs.items() if k.startswith("val_")}
    return {"epoch": epoch + 1, "monitor": MONITOR, "keep": keep, **values}
