"""Export a trained bundle for teams without spine_keras: a TensorFlow SavedModel with a `serve` signature,
the inference `.keras` model, and `spine_keras.json` beside it and inside it (in `saved_model/assets/`).

Layout of the export folder (default `RUN_DIR/export`; a k-fold run gets one such folder per `fold_<i>`):
`saved_model/` (serve: float32 batch -> {probabilities, labels}), `model.keras`, `spine_keras.json`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from spine_keras.bundle import (
    EXPORT_KERAS_NAME,
    METADATA_NAME,
    RUN_MODEL_FILES,
    SAVED_MODEL_DIR,
    ExportInfo,
    ModelBundle,
    load_keras_model,
    probability_function,
    read_bundle,
)
from spine_keras.errors import UserError

DEFAULT_DIR = "export"
SIGNATURE = "serve"


def side_multiple(model) -> int:
    """2 to the number of 2x poolings: spatial sides must be multiples of it."""
    import keras

    pooling = (keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
    return 2 ** sum(isinstance(layer, pooling) and max(layer.strides) == 2 for layer in model.layers)


def _serve_for(model, bundle: ModelBundle) -> tuple[Any, list[int | None]]:
    """The serving function with flexible batch (and, for 2D models whose layers allow it, flexible sides)."""
    import tensorflow as tf

    if bundle.mode == "2d":
        flexible = [None, None, None, bundle.channels]
        try:
            spec = tf.TensorSpec(flexible, tf.float32, name="image")
            return probability_function(model, spec, bundle.logits), flexible
        except (TypeError, ValueError):  # a layer needs static sides (e.g. shape arithmetic on x.shape)
            pass
    fixed = [None, *bundle.input_shape]
    return probability_function(model, tf.TensorSpec(fixed, tf.float32, name="image"), bundle.logits), fixed


def export_saved_model(model, bundle: ModelBundle, path: Path) -> ExportInfo:
    """Write `model` as a SavedModel with the `serve` endpoint; returns what the export holds."""
    import keras

    serve, shape = _serve_for(model, bundle)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve)
    archive.write_out(str(path), verbose=False)
    return ExportInfo(
        saved_model=SAVED_MODEL_DIR,
        keras=EXPORT_KERAS_NAME,
        signature=SIGNATURE,
        input_shape=tuple(shape),
        flexible_sides=all(s is None for s in shape[1:-1]),
        side_multiple=side_multiple(model),
    )


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished temporary folder onto `target`, replacing an earlier export there."""
    if target.exists():
        if not ((target / METADATA_NAME).is_file() and (target / SAVED_MODEL_DIR).is_dir()):
            raise UserError(f"'{target}' exists and is not a spine_keras export; choose another -o folder")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)  # the earlier export stays whole until the new one is in place
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, target)


def export_model(keras_path: Path, bundle: ModelBundle, out_dir: Path) -> Path:
    """Export one `.keras` model with its metadata into `out_dir`, atomically (built beside it, then renamed)."""
    model = load_keras_model(keras_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        exported = bundle.replace(export=export_saved_model(model, bundle, tmp / SAVED_MODEL_DIR))
        model.save(str(tmp / EXPORT_KERAS_NAME))
        exported.write(tmp)
        exported.write(tmp / SAVED_MODEL_DIR / "assets")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _model_file(run_dir: Path) -> Path | None:
    return next((run_dir / name for name in RUN_MODEL_FILES if (run_dir / name).is_file()), None)


def export_bundle(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Export a run folder (`best.keras`, else `last.keras`) or every fold of a k-fold run; returns the folder."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_DIR
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' not found")
    model_file = _model_file(run_dir)
    if model_file is not None:
        return export_model(model_file, read_bundle(run_dir), out)
    folds = sorted(p for p in run_dir.glob("fold_*") if p.is_dir() and _model_file(p) is not None)
    if not folds:
        raise UserError(f"no model in '{run_dir}': expected {' or '.join(RUN_MODEL_FILES)} (or fold_* folders)")
    for fold in folds:
        export_model(_model_file(fold), read_bundle(fold), out / fold.name)
    return out
